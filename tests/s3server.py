"""A local S3-compatible server for the tests: moto in server mode (the `scale` extra), one process per test run
on 127.0.0.1, stopped by its own pid.

Used by tests/conftest.py's ``s3_server`` session fixture. A topology test whose Stratus servers run in another
network namespace cannot reach this one (TCP on the host's loopback): it starts its own inside the namespace
with ``moto_command(port)`` (prefixed with whatever enters the namespace) and points its servers at it with
``s3_env(endpoint)``; buckets are created with ``make_client(endpoint).create_bucket(Bucket=...)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ACCESS_KEY = "stratus-test"
SECRET_KEY = "stratus-test-secret"  # moto checks no signature; any pair works
REGION = "us-east-1"
_PR_SET_PDEATHSIG = 1


def moto_command(port: int, host: str = "127.0.0.1") -> list[str]:
    """The argv of a moto S3 server on ``host:port`` (this interpreter, so the venv's moto)."""
    return [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]


def s3_env(endpoint: str) -> dict[str, str]:
    """What a Stratus server (or any boto3 client) needs to use the server at ``endpoint``: boto3's own settings."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        # No shared config or credentials file of the machine may change what the tests talk to.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


def make_client(endpoint: str) -> Any:
    """A boto3 client as the store makes one (stratus.store.s3.client_config), on ``endpoint``."""
    import boto3

    from stratus.store.s3 import client_config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=client_config(),
    )


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the test run that started it dies, so no server outlives it."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_ready(endpoint: str, deadline_seconds: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``endpoint`` until it answers HTTP (any status: moto answers / with a bucket listing)."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the S3 server exited with {process.returncode}")
        try:
            httpx.get(endpoint, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"the S3 server at {endpoint} did not answer within {deadline_seconds:.0f} s")


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path
    _client: Any = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def env(self) -> dict[str, str]:
        return s3_env(self.endpoint)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.endpoint)
        return self._client

    def create_bucket(self, prefix: str = "stratus") -> str:
        """A new, empty bucket with a unique name: tests sharing the server never see each other's objects."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_s3_server(deadline_seconds: float, log_dir: Path) -> S3Server:
    """moto's S3 server on a free port of 127.0.0.1; returns once it answers."""
    for _attempt in range(3):  # the free port may be taken between the probe and moto's bind
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        log = log_dir / f"moto-{port}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                moto_command(port),
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "MOTO_PORT": str(port)},
                preexec_fn=_die_with_parent,  # only a prctl: no lock is taken between fork and exec
            )
        endpoint = f"http://127.0.0.1:{port}"
        try:
            wait_ready(endpoint, deadline_seconds, process)
        except RuntimeError:
            if process.poll() is None:
                process.kill()
            process.wait()
            continue
        return S3Server(endpoint, process, log)
    raise RuntimeError(f"the S3 server did not start; see {log}")
