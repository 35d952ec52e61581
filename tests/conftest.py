"""Shared fixtures: the bundled samples built once per run, an in-process app, a real server."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi.testclient import TestClient

from stratus.api import create_app
from stratus.settings import Settings

if TYPE_CHECKING:
    from pg import PostgresServer
    from s3server import S3Server

ROOT = Path(__file__).resolve().parent.parent

# Concurrency tests open thousands of loopback connections; servers started from here inherit this.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft < min(_hard, 8192):
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(_hard, 8192), _hard))


def scaled(seconds: float) -> float:
    """An outer deadline for a wait in a test, scaled for slow or busy machines (STRATUS_TEST_TIMEOUT_SCALE, default 3).
    Deadlines bound waits on progress or events; they are never timing claims."""
    return seconds * float(os.environ.get("STRATUS_TEST_TIMEOUT_SCALE", "3"))


#: Modules (or folders) that take longest, started first so that no parallel worker ends the run alone with one of
#: them; the rest keep their order.
_LONGEST_FIRST = (
    "tests/scaleout/",
    "tests/e2e/test_compression.py",
    "tests/ui/",
    "tests/e2e/test_training.py",
    "tests/edge/",
    "tests/security/test_fuzzing.py",
    "tests/monitoring/test_alerts_live.py",
    "tests/e2e/test_replica_lifeline.py",
)
#: Folders whose modules share session servers (one Ray cluster; one console server and browser): each folder runs
#: on one worker, like a module.
_SHARED_FOLDERS = ("tests/scaleout/", "tests/ui/")


def _group_of(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return next((folder for folder in _SHARED_FOLDERS if path.startswith(folder)), path)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """pytest-timeout's per-test limit, scaled like every other deadline here (600 s at the default scale): it
    catches hangs, and must never be what stops a test that is still making progress on a slow machine. The longest
    groups go first (see pytest_xdist_make_scheduler)."""
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(scaled(200)))

    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return next((i for i, p in enumerate(_LONGEST_FIRST) if path.startswith(p)), len(_LONGEST_FIRST))

    items.sort(key=rank)  # stable: each module's tests stay together and in order


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """The tests run in parallel workers (pytest-xdist, ``-n auto``), a module at a time per worker so that its module
    fixtures (servers) start once, and the folders of _SHARED_FOLDERS whole. xdist's own ``--dist loadgroup`` cannot
    do the folders with pytest 9 (it renames items through an attribute pytest no longer reads)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group_of(nodeid)

    return ByGroup(config, log)


@pytest.fixture(scope="session")
def sample_cache() -> Path:
    """The machine's shared sample cache, the one `make install` fills and every home imports from
    (STRATUS_SAMPLE_CACHE_DIR overrides it, as for the server). ensure_samples re-verifies every checksum and
    builds only when the cache is missing or off, under a file lock: parallel workers share one build."""
    from stratus.samples import ensure_samples

    cache = Settings().resolved_sample_cache_dir
    ensure_samples(cache)
    return cache


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the whole run (tests/pg.py: pgserver's binaries, 127.0.0.1 and a unix socket),
    started on first use and stopped by its pid. Each test that uses it gets its own database."""
    from pg import start_postgres

    server = start_postgres(scaled(40))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One local S3-compatible server (moto in server mode, tests/s3server.py) for the whole run, on 127.0.0.1,
    started on first use and stopped by its pid. Each test that uses it makes its own bucket (create_bucket)."""
    from s3server import start_s3_server

    server = start_s3_server(scaled(20), tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


def _database_url(request: pytest.FixtureRequest, folder: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{folder / 'meta.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = server.create_database()  # a copy of the migrated template: tens of milliseconds
    yield server.url(name)
    server.drop_database(name)


#: The metadata DB engines the store, registry, jobs, security and metering tests run against.
DATABASES = ["sqlite", "postgresql"]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh metadata DB of this test: embedded SQLite, then a database of the run's PostgreSQL."""
    yield from _database_url(request, tmp_path)


@pytest.fixture(scope="module", params=DATABASES)
def module_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """database_url for a module's shared fixture (one DB per engine per module)."""
    yield from _database_url(request, tmp_path_factory.mktemp("db"))


def make_settings(home: Path, sample_cache: Path | None = None, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": home,
        "samples": sample_cache is not None,
        "sample_cache_dir": sample_cache,
        "intra_op_threads": 1,
        "allowed_hosts": ["testserver"],  # the Host that Starlette's TestClient sends
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def admin_key_of(client: TestClient) -> str:
    """The bootstrap admin key the app created on first start (also in HOME/admin.key)."""
    platform = client.app.state.platform  # type: ignore[attr-defined]
    key: str = platform.settings.resolved_admin_key_file.read_text().strip()
    return key


def as_admin(client: TestClient) -> TestClient:
    """Send the admin key on every request of this client: most tests are about something other than auth."""
    client.headers.update(bearer(admin_key_of(client)))
    return client


@pytest.fixture
def empty_app(tmp_path: Path) -> Iterator[TestClient]:
    """An in-process app on a fresh home without samples, called with the bootstrap admin key."""
    with TestClient(create_app(make_settings(tmp_path / "home"))) as client:
        yield as_admin(client)


@pytest.fixture(scope="module")
def sample_app(sample_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An in-process app with iris and digits registered, called with the bootstrap admin key."""
    home = tmp_path_factory.mktemp("home")
    with TestClient(create_app(make_settings(home, sample_cache))) as client:
        yield as_admin(client)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    url: str
    port: int
    home: Path
    process: subprocess.Popen[bytes]
    log: Path
    grpc_port: int = 0  # 0: this server serves no gRPC

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def admin_key(self) -> str:
        """The bootstrap admin key that `stratus serve` wrote into its home on first start."""
        return (self.home / "admin.key").read_text().strip()

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.admin_key)

    def request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        """httpx.request with the admin key added to the headers given, and an outer deadline scaled for a busy
        machine instead of httpx's 5 s (a 90 MB model file read back timed out on a machine at load 20)."""
        headers = {**self.headers, **(kwargs.pop("headers", None) or {})}  # type: ignore[dict-item]
        kwargs.setdefault("timeout", scaled(30))
        return httpx.request(method, url, headers=headers, **kwargs)  # type: ignore[arg-type]

    def get(self, url: str, **kwargs: object) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: object) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: object) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: object) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: object) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def client(self, **kwargs: object) -> httpx.Client:
        """An httpx client on this server that sends the admin key (deadline as in ``request``)."""
        kwargs.setdefault("timeout", scaled(30))
        return httpx.Client(base_url=self.url, headers=self.headers, **kwargs)  # type: ignore[arg-type]

    def stop(self, kill: bool = False) -> None:
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(timeout=scaled(30))


#: The home of each server started here, so the CLI pointed at it finds its admin key as a local user would.
_HOMES: dict[str, Path] = {}


def start_server(
    home: Path, sample_cache: Path | None, *extra: str, env: dict[str, str] | None = None, scheme: str = "http"
) -> LiveServer:
    """`stratus serve` in a child process on a free loopback port; returns once /v2/health/ready is 200.
    With ``scheme="https"`` (the caller passes --tls-cert/--tls-key), readiness is polled without verifying.

    A port found free can be taken before the server binds it (tests run in parallel workers): a server that
    exits because its address is in use is started again on another port."""
    for _ in range(4):
        try:
            return _start_server(home, sample_cache, *extra, env=env, scheme=scheme)
        except _PortTaken:
            continue
    raise RuntimeError("no free port could be bound in four tries")


class _PortTaken(Exception):
    pass


def _start_server(
    home: Path, sample_cache: Path | None, *extra: str, env: dict[str, str] | None, scheme: str
) -> LiveServer:
    port = free_port()
    log = home.parent / f"server-{port}.log"
    home.mkdir(parents=True, exist_ok=True)
    # No gRPC unless a test asks (--grpc-port): servers of parallel tests would all want its default port.
    child_env = {**os.environ, "STRATUS_INTRA_OP_THREADS": "1", "STRATUS_GRPC_PORT": "0", **(env or {})}
    if sample_cache is not None:
        child_env["STRATUS_SAMPLE_CACHE_DIR"] = str(sample_cache)
    args = [sys.executable, "-m", "stratus", "serve", "--port", str(port), "--home", str(home)]
    if sample_cache is None:
        args.append("--no-samples")
    with open(log, "wb") as out:
        process = subprocess.Popen([*args, *extra], stdout=out, stderr=subprocess.STDOUT, env=child_env)
    grpc_port = int(extra[extra.index("--grpc-port") + 1]) if "--grpc-port" in extra else 0
    server = LiveServer(f"{scheme}://127.0.0.1:{port}", port, home, process, log, grpc_port)
    _HOMES[server.url] = home
    deadline = time.monotonic() + scaled(120)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text()
            if "address already in use" in text:
                raise _PortTaken(text)
            raise RuntimeError(f"server exited with {process.returncode}:\n{text}")
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=2, verify=False).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop(kill=True)
    raise RuntimeError(f"server did not become ready:\n{log.read_text()}")


@pytest.fixture(scope="module")
def live_server(sample_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("live") / "home", sample_cache, "--grpc-port", str(free_port()))
    yield server
    server.stop()


def run_cli(
    *args: str, url: str | None = None, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if url is not None:
        env["STRATUS_URL"] = url
        if url in _HOMES and "STRATUS_API_KEY" not in env:
            env["STRATUS_HOME"] = str(_HOMES[url])
    result = subprocess.run(
        [sys.executable, "-m", "stratus", *args],
        capture_output=True,
        text=True,
        env=env,
        # An outer bound only: --wait commands follow a job for as long as it progresses.
        timeout=scaled(150),
        input=input,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"stratus {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


class KeyedTritonClient:
    """tritonclient.http's client with the API key on every call: its methods take ``headers=``, which is how a
    Triton user sends a bearer token."""

    def __init__(self, server: LiveServer) -> None:
        import tritonclient.http as triton

        self._client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        self._headers = server.headers

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._client, name)
        if not callable(attr) or name == "close":
            return attr

        def call(*args: object, **kwargs: object) -> object:
            kwargs["headers"] = {**self._headers, **(kwargs.get("headers") or {})}  # type: ignore[dict-item]
            return attr(*args, **kwargs)

        return call
