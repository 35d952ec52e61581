"""What the edge runner tests share: the runner as a child process, a cloud server restartable on its port, and a
proxy between them that can tamper with bundles or hold forwarded requests (a man in the middle, a hung cloud)."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import conftest
from conftest import LiveServer, free_port, scaled

ROOT = Path(__file__).resolve().parents[2]


def start_cloud(home: Path, sample_cache: Path, port: int) -> LiveServer:
    """`stratus serve` on ``port`` (the same port again after a stop: the runner's URL stays)."""
    log = home.parent / f"cloud-{port}.log"
    env = {**os.environ, "STRATUS_INTRA_OP_THREADS": "1", "STRATUS_GRPC_PORT": "0"}
    env["STRATUS_SAMPLE_CACHE_DIR"] = str(sample_cache)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "stratus", "serve", "--port", str(port), "--home", str(home)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", port, home, process, log)
    conftest._HOMES[server.url] = home  # the CLI pointed at it finds its admin key, as on the server's machine
    _wait(lambda: httpx.get(f"{server.url}/v2/health/ready", timeout=2).status_code == 200, process, log)
    return server


def _wait(ready: Any, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + scaled(60)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if ready():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"not ready:\n{log.read_text()[-3000:]}")


def edge_command(state: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "stratus_edge", "--state", str(state), "--log-level", "info", *args]


def edge_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "edge" / "src"), **extra}


@dataclass
class Runner:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    #: Seconds from the process start to its first answered inference.
    first_answer_s: float = 0.0

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.url}/edge/status", timeout=5).json()
        return result

    def stop(self, kill: bool = False) -> None:
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(timeout=scaled(30))


def start_runner(state: Path, args: list[str], probe: dict[str, Any], env: dict[str, str] | None = None) -> Runner:
    """`stratus-edge sync ...` on a free port; returns once ``probe`` (a V2 request) is answered."""
    port = free_port()
    log = state.parent / f"runner-{port}.log"
    started = time.monotonic()
    with open(log, "ab") as out:
        process = subprocess.Popen(
            edge_command(state, "sync", "--port", str(port), *args), stdout=out, stderr=subprocess.STDOUT, env=env
        )
    runner = Runner(f"http://127.0.0.1:{port}", process, log)
    model = probe["model"]
    _wait(
        lambda: httpx.post(f"{runner.url}/v2/models/{model}/infer", json=probe["body"], timeout=5).status_code == 200,
        process,
        log,
    )
    runner.first_answer_s = time.monotonic() - started
    return runner


@dataclass
class Load:
    """Requests in a loop in a thread, counting answers and failures (anything but 200)."""

    url: str
    body: dict[str, Any]
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with httpx.Client(timeout=scaled(10)) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(self.url, json=self.body)
                    if r.status_code == 200:
                        self.ok += 1
                        self.versions.add(r.json()["model_version"])
                    else:
                        self.failed.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))
                time.sleep(0.01)

    def stop(self) -> Load:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=scaled(10))
        return self


class Proxy:
    """Forwards to the cloud. ``tamper`` = "byte" flips a byte of model.onnx in bundles, "key" re-signs the
    manifest with a key of its own; ``hang`` holds inference requests (a cloud that does not answer)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.tamper: str | None = None
        self.hang = threading.Event()
        self.released = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.hang.is_set() and self.path.endswith(("/infer", ":predict")):
                    proxy.released.wait(scaled(30))
                    self.close_connection = True
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                tampering = proxy.tamper and self.path.startswith("/api/v1/device/bundle")
                if tampering:
                    if headers.get("If-None-Match") == f'"tampered-{proxy.tamper}"':
                        self._answer(304, {}, b"")
                        return
                    headers.pop("If-None-Match", None)
                try:
                    r = httpx.request(
                        self.command, proxy.upstream + self.path, headers=headers, content=body, timeout=60
                    )
                except httpx.HTTPError:
                    self._answer(502, {}, b"cloud unreachable")
                    return
                out = {k: v for k, v in r.headers.items() if k.lower() in ("content-type", "etag")}
                content = r.content
                if tampering and r.status_code == 200:
                    content = tampered(content, proxy.tamper or "")
                    out["etag"] = f'"tampered-{proxy.tamper}"'
                self._answer(r.status_code, out, content)

            def _answer(self, status: int, headers: dict[str, str], content: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def tampered(bundle: bytes, how: str) -> bytes:
    """The bundle with one byte of its model changed, or its manifest signed by another key."""
    source = zipfile.ZipFile(io.BytesIO(bundle))
    entries = {name: source.read(name) for name in source.namelist()}
    if how == "byte":
        model = bytearray(entries["model.onnx"])
        model[len(model) // 2] ^= 0x01
        entries["model.onnx"] = bytes(model)
    else:
        entries["manifest.sig"] = base64.b64encode(Ed25519PrivateKey.generate().sign(entries["manifest.json"]))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()
