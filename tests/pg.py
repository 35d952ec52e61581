"""A real PostgreSQL for the tests: the binaries of the `pgserver` package (the `scale` extra), one server per
test run, on 127.0.0.1 and on a unix socket in its own temp dir, stopped by its own pid.

Used by tests/conftest.py's ``postgres`` session fixture; topology tests that run Stratus servers in another
network namespace reach it through the unix socket (``socket_url``), which a network namespace does not hide.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg

#: What every test database is copied from: the schema already migrated, so a new database costs a file copy.
TEMPLATE = "stratus_template"
_PR_SET_PDEATHSIG = 1


def _bin_dir() -> Path:
    """The binaries inside the installed pgserver package, found without importing it (its import looks for a
    runtime dir and warns when XDG_RUNTIME_DIR is unset; its server manager is not used here)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the pgserver package is not installed: pip install -c constraints.txt -e '.[scale]'")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_as_uid() -> int | None:
    """PostgreSQL refuses to run as root; as root, run it as `nobody` (no account is created)."""
    return 65534 if os.geteuid() == 0 else None


def _die_with_parent() -> None:
    """In the postmaster, before exec: a fast shutdown (SIGINT) when the test run that started it dies, so a
    killed run leaves no server behind."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


@dataclass
class PostgresServer:
    root: Path
    port: int
    socket_dir: Path
    password: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL over TCP on 127.0.0.1."""
        return f"postgresql+psycopg://postgres:{quote(self.password)}@127.0.0.1:{self.port}/{database}"

    def socket_url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL over the unix socket (reachable from another network namespace of this machine)."""
        return (
            f"postgresql+psycopg://postgres:{quote(self.password)}@/{database}?host={self.socket_dir}&port={self.port}"
        )

    def _dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres password={self.password} dbname={database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        with psycopg.connect(self._dsn(database), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # test-made identifiers only

    def create_database(self, template: str | None = TEMPLATE) -> str:
        """A new empty database (``template=None``) or a copy of the migrated template; returns its name."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template or "template0"}"')
        return name

    def drop_database(self, name: str) -> None:
        # FORCE ends the connections a test's engines still hold (a pool not disposed, a killed server's).
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: ends the sessions, then exits
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(deadline_s: float = 120.0) -> PostgresServer:
    """initdb into a fresh temp dir, start `postgres` as a child, wait until it answers, migrate the template."""
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="stratus-pg-"))
    root.chmod(0o755)  # the server's user (nobody, when the tests run as root) must reach its folders
    data, run = root / "data", root / "run"
    uid = _run_as_uid()
    for folder in (data, run):
        folder.mkdir(mode=0o700)
        if uid is not None:
            os.chown(folder, uid, uid)
    password = secrets.token_urlsafe(18)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if uid is not None:
        os.chown(pwfile, uid, uid)
    pwfile.chmod(0o600)
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}"]
    subprocess.run(
        [*initdb, "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"],
        check=True,
        capture_output=True,
        user=uid,
        cwd=root,
    )
    pwfile.unlink()
    port = _free_port()
    log = open(root / "postgres.log", "wb")
    settings = {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(run),
        "max_connections": "300",
        "shared_buffers": "32MB",
        # A test server: durability is not what is tested, speed of CREATE DATABASE and commits is.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
    }
    args = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port)]
    for name, value in settings.items():
        args += ["-c", f"{name}={value}"]
    with log:  # the child has its own copy of the file
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, user=uid, cwd=root, preexec_fn=_die_with_parent
        )
    server = PostgresServer(root, port, run, password, process)
    deadline = time.monotonic() + deadline_s
    while True:
        if process.poll() is not None:
            text = (root / "postgres.log").read_text(errors="replace")
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"postgres exited with {process.returncode}:\n{text}")
        try:
            server.execute("SELECT 1")
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                server.stop()
                raise
            time.sleep(0.05)
    server.execute(f'CREATE DATABASE "{TEMPLATE}"')
    from stratus.store import Database

    database = Database(server.url(TEMPLATE))
    try:
        database.migrate()
    finally:
        database.dispose()
    return server
