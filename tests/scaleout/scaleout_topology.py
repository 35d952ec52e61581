"""The scale-out topology fixture (test_topology.py imports it), started once per test run: a two-node Ray cluster,
PostgreSQL, the S3 server and two Stratus servers, all on loopback inside a network namespace of the test's own
(topology_driver.py). The test process stays outside and talks to each server through a unix socket the driver
forwards into the namespace."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import scaled

DRIVER = Path(__file__).with_name("topology_driver.py")


def _can_unshare() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and shutil.which("ip") is not None


@dataclass
class Topology:
    run: Path
    ready: dict[str, Any]
    key: str
    driver: subprocess.Popen[bytes]
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, name: str, timeout: float = 60.0) -> httpx.Client:
        """A new client of server ``name`` ("s1" or "s2"), through its forwarded unix socket."""
        server = self.ready["servers"][name]
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=server["sock"]),
            base_url=f"http://127.0.0.1:{server['port']}",
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=timeout,
        )

    def __getitem__(self, name: str) -> httpx.Client:
        if name not in self.clients:
            self.clients[name] = self.client(name)
        return self.clients[name]

    def pid(self, name: str) -> int:
        return int(self.ready["servers"][name]["pid"])

    def restart(self, name: str, deadline_s: float) -> int:
        """Start server ``name`` again (the test killed it) on its home and port; wait until it is ready again."""
        done = self.run / f"restarted-{name}"
        done.unlink(missing_ok=True)
        (self.run / f"restart-{name}").write_text("")
        deadline = time.monotonic() + deadline_s
        while not done.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"the driver did not restart {name} within {deadline_s:.0f} s")
            time.sleep(0.1)
        pid = int(done.read_text())
        self.ready["servers"][name]["pid"] = pid
        old = self.clients.pop(name, None)
        if old is not None:
            old.close()
        while time.monotonic() < deadline:
            try:
                with self.client(name, timeout=5) as client:
                    if client.get("/v2/health/ready").status_code == 200:
                        return pid
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{name} did not answer again within {deadline_s:.0f} s")

    def log(self, name: str) -> str:
        path = self.run / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _stop(driver: subprocess.Popen[bytes]) -> None:
    """The driver kills everything it started by pid, then exits; kill it by its own pid if it does not."""
    if driver.poll() is None:
        driver.send_signal(signal.SIGTERM)
        try:
            driver.wait(scaled(20))
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait(10)


def start_topology(tmp_path_factory: pytest.TempPathFactory, sample_cache: Path) -> Iterator[Topology]:
    """The body of test_topology.py's session fixture."""
    if not _can_unshare():
        pytest.skip("the scale-out topology needs root, unshare and ip (a network namespace of its own)")
    run = tmp_path_factory.mktemp("topo")
    started = time.monotonic()
    stratus_env = {
        # Two nodes of one CPU each: jobs and replicas ask for fractions, so both fit beside each other.
        "STRATUS_JOB_CPUS": "0.5",
        "STRATUS_JOB_THREADS": "1",
        # Two jobs a server: test_distributed_training.py queues a job behind two running ones, for want of Ray room.
        "STRATUS_JOB_SLOTS": "2",
        "STRATUS_REPLICA_CPUS": "0.25",
        "STRATUS_INTRA_OP_THREADS": "1",
        "STRATUS_SAMPLE_CACHE_DIR": str(sample_cache),
        "STRATUS_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "STRATUS_KEY_PEPPER": base64.b64encode(secrets.token_bytes(32)).decode(),
        "STRATUS_USAGE_FLUSH_SECONDS": "1",
    }
    config: dict[str, Any] = {"deadline_s": scaled(60), "stratus_env": stratus_env, "s3": True, "postgres": True}
    (run / "config.json").write_text(json.dumps(config))
    with open(run / "driver.log", "wb") as log:
        driver = subprocess.Popen(
            ["unshare", "-n", sys.executable, str(DRIVER), str(run)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + scaled(120)
        while not (run / "ready.json").exists():
            if driver.poll() is not None or (run / "error.txt").exists() or time.monotonic() > deadline:
                error = (run / "error.txt").read_text() if (run / "error.txt").exists() else "no ready.json"
                pytest.fail(f"the topology did not start: {error}\n{(run / 'driver.log').read_text()[-3000:]}")
            time.sleep(0.2)
        ready = json.loads((run / "ready.json").read_text())
        print(f"\n[scaleout] topology started in {time.monotonic() - started:.1f} s")
        topo = Topology(run, ready, ready["admin_key"].strip(), driver)
        yield topo
        for client in topo.clients.values():
            client.close()
    finally:
        _stop(driver)


_shared: dict[str, Any] = {}


def shared_topology(tmp_path_factory: pytest.TempPathFactory, sample_cache: Path) -> Iterator[Topology]:
    """One topology for every module of this folder that asks (each has its own session fixture calling this): the
    first starts it, the last to finish stops it. Under pytest-xdist each worker process has its own."""
    if "topology" not in _shared:
        started = start_topology(tmp_path_factory, sample_cache)
        _shared.update(topology=next(started), started=started, users=0)
    _shared["users"] += 1
    try:
        yield _shared["topology"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            next(_shared.pop("started"), None)
            _shared.clear()
