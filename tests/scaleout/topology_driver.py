"""The scale-out topology, started inside a network namespace of its own: run as
``unshare -n python tests/scaleout/topology_driver.py RUN_DIR`` by tests/scaleout/scaleout_topology.py.

Ray picks its node address from the network interfaces; in a namespace whose only interface is ``lo`` every node
reports 127.0.0.1 and nothing can bind or connect anywhere else. Inside it this driver starts a two-node Ray
cluster (one CPU each, token authentication on, no dashboard), PostgreSQL and the S3 server when the config asks
(tests/pg.py, tests/s3server.py), and two Stratus servers (ray executor and placement) sharing one metadata DB
(PostgreSQL, or else one SQLite home) and one artifact store (S3, or else that home's folder). The test, outside
the namespace, reaches each Stratus server through a unix socket this driver forwards to the server's loopback port
(a path-named unix socket crosses network namespaces), and kills processes by their pids, which the namespace does
not change.

It is the child subreaper of everything it starts (Ray's daemons detach from `ray start`), so on SIGTERM, or when
the test process dies, it kills every descendant by its pid (never `ray stop`, which stops every Ray of the
machine) and exits. It writes RUN_DIR/ready.json once everything answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

#: Ray's session folders, removed once every process is gone.
TEMP_DIRS: list[Path] = []
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
BIN = Path(sys.executable).parent


def prctl(option: int, value: int) -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value, 0, 0, 0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants() -> list[int]:
    """Every live process below this one (as subreaper, detached daemons are re-parented here)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_all() -> None:
    """SIGKILL every descendant by pid until none is left, reaping them."""
    for _ in range(50):
        pids = descendants()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            try:
                if os.waitpid(-1, os.WNOHANG) == (0, 0):
                    time.sleep(0.02)
            except ChildProcessError:
                break


def wait_http(url: str, deadline_s: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {deadline_s:.0f} s")


def start_ray(run: Path, env: dict[str, str], deadline_s: float) -> dict[str, Any]:
    port = free_port()
    # Ray's socket paths must stay short (AF_UNIX paths are limited to 107 bytes).
    temp = Path(f"/tmp/sray-{secrets.token_hex(3)}")
    TEMP_DIRS.append(temp)
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--object-store-memory=100000000", "--disable-usage-stats"]
    head = [str(BIN / "ray"), "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}"]
    with open(run / "ray-head.log", "wb") as log:
        subprocess.run([*head, *common], env=env, stdout=log, stderr=log, check=True, timeout=deadline_s)
    with open(run / "ray-worker.log", "wb") as log:
        worker = [str(BIN / "ray"), "start", f"--address=127.0.0.1:{port}"]
        subprocess.run([*worker, *common], env=env, stdout=log, stderr=log, check=True, timeout=deadline_s)
    return {"address": f"127.0.0.1:{port}", "temp_dir": str(temp), "raylets": raylets(temp)}


def raylets(temp: Path) -> dict[str, int]:
    """The raylet process of each node of this cluster, by node id (the test kills one to lose a node)."""
    found = {}
    for pid in descendants():
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if args and args[0].endswith("/raylet") and any(str(temp) in a for a in args):
            node = next((a.split("=", 1)[1] for a in args if a.startswith("--node_id=")), "")
            found[node] = pid
    return found


NODES = """
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print(json.dumps([
    {"id": n["NodeID"], "address": n["NodeManagerAddress"], "alive": n["Alive"], "cpus": n["Resources"].get("CPU"),
     "head": "node:__internal_head__" in n["Resources"]}
    for n in ray.nodes()
]))
"""


def ray_facts(address: str, token_path: Path, env: dict[str, str], deadline_s: float) -> dict[str, Any]:
    """The cluster's nodes as a token-holding driver sees them, and what its GCS answers a call without the token,
    with a wrong one and with the right one (Ray's own client retries a refused connection for 20 s)."""
    import grpc

    nodes = subprocess.run(
        [sys.executable, "-c", NODES, address], env=env, capture_output=True, text=True, check=True, timeout=deadline_s
    )
    token = token_path.read_text().strip()
    answers = {}
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId")
        for name, metadata in (
            ("none", None),
            ("wrong", [("authorization", "Bearer x" + token[1:])]),
            ("token", [("authorization", f"Bearer {token}")]),
        ):
            try:
                call(b"", metadata=metadata, timeout=10)
                answers[name] = "OK"
            except grpc.RpcError as exc:
                answers[name] = exc.code().name
    return {"nodes": json.loads(nodes.stdout.strip().splitlines()[-1]), "gcs_answers": answers}


def start_stratus(name: str, run: Path, env: dict[str, str], port: int = 0) -> tuple[subprocess.Popen[bytes], int]:
    port = port or free_port()
    command = [sys.executable, "-m", "stratus", "serve", "--port", str(port), "--grpc-port", "0"]
    with open(run / f"{name}.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, port


async def forward(path: Path, port: int) -> asyncio.AbstractServer:
    """A unix socket at ``path`` whose every connection is piped to 127.0.0.1:port inside the namespace."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_unix_server(handle, path=str(path))


async def restarts(run: Path, envs: dict[str, dict[str, str]], ports: dict[str, int]) -> None:
    """A test that killed a server asks for it again by writing RUN_DIR/restart-NAME: the same server (home,
    database, port, so its forwarded socket keeps working) starts again; its pid goes to RUN_DIR/restarted-NAME."""
    while True:
        for name in ports:
            request = run / f"restart-{name}"
            if request.exists():
                request.unlink()
                log = run / f"{name}.log"
                if log.exists():  # the earlier run's log, kept apart: the new one starts empty
                    log.rename(run / f"{name}.log.{time.time_ns()}")
                process, _ = start_stratus(name, run, envs[name], ports[name])
                (run / f"restarted-{name}.tmp").write_text(str(process.pid))
                (run / f"restarted-{name}.tmp").rename(run / f"restarted-{name}")
        await asyncio.sleep(0.2)


async def serve_forever(run: Path, ports: dict[str, int], envs: dict[str, dict[str, str]]) -> None:
    servers = [await forward(run / f"{name}.sock", port) for name, port in ports.items()]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    watcher = asyncio.create_task(restarts(run, envs, ports))
    (run / "ready.json.tmp").rename(run / "ready.json")
    await stop.wait()
    watcher.cancel()
    for server in servers:
        server.close()


def _admin_key(run: Path, database_url: str | None) -> str:
    """The bootstrap admin key, written by whichever server created it (on one DB, only one of them does)."""
    for home in ("home-s1", "home-s2") if database_url else ("home",):
        if (run / home / "admin.key").exists():
            return (run / home / "admin.key").read_text()
    raise RuntimeError("no server wrote an admin key")


def main(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the test run died: tear everything down
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(1)))
    deadline_s = float(config.get("deadline_s", 120))
    cleanup: list[Any] = []
    try:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        token = run / "ray-token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_USAGE_STATS_ENABLED": "0",
            # Pytest's own plugins and settings stay out of the servers.
            "PYTEST_ADDOPTS": "",
        }
        env.pop("RAY_AUTH_TOKEN", None)
        moto = None
        if config.get("s3"):  # started first, it gets ready while Ray starts
            from s3server import make_client, moto_command, s3_env
            from s3server import wait_ready as wait_s3

            s3_port = free_port()
            with open(run / "s3.log", "wb") as log:
                moto = subprocess.Popen(moto_command(s3_port), stdout=log, stderr=subprocess.STDOUT, env=env)
        ready: dict[str, Any] = {}

        def ray_up() -> None:
            ready["ray"] = start_ray(run, env, deadline_s)
            ready["ray"].update(ray_facts(ready["ray"]["address"], token, env, deadline_s))

        # Ray starts in a thread (its daemons detach) while PostgreSQL starts from this main thread: its
        # parent-death signal follows the thread that started it, and this one lives as long as the driver.
        ray_thread = threading.Thread(target=ray_up, daemon=True)
        ray_thread.start()
        database_url = None
        if config.get("postgres"):
            from pg import start_postgres

            postgres = start_postgres(deadline_s)
            cleanup.append(postgres.stop)
            database_url = postgres.url(postgres.create_database(template=None))
            ready["postgres"] = {"pid": postgres.pid}
        ray_thread.join(deadline_s * 2)
        if "nodes" not in ready.get("ray", {}):
            raise RuntimeError("the Ray cluster did not start (see ray-head.log, ray-worker.log)")
        stratus_env = {
            **env,
            "STRATUS_EXECUTOR": "ray",
            "STRATUS_PLACEMENT": "ray",
            "STRATUS_RAY_ADDRESS": ready["ray"]["address"],
            "STRATUS_LOG_LEVEL": "info",
            **config.get("stratus_env", {}),
        }
        if moto is not None:
            endpoint = f"http://127.0.0.1:{s3_port}"
            wait_s3(endpoint, deadline_s, moto)
            make_client(endpoint).create_bucket(Bucket="stratus")
            stratus_env.update({**s3_env(endpoint), "STRATUS_ARTIFACTS": "s3://stratus/topology"})
            ready["s3"] = {"endpoint": endpoint, "pid": moto.pid}
        processes: dict[str, subprocess.Popen[bytes]] = {}
        ports: dict[str, int] = {}
        envs: dict[str, dict[str, str]] = {}
        for name in ("s1", "s2"):
            home = run / (f"home-{name}" if database_url else "home")
            server_env = {**stratus_env, "STRATUS_HOME": str(home)}
            if database_url:
                server_env["STRATUS_DATABASE_URL"] = database_url
            envs[name] = server_env
            processes[name], ports[name] = start_stratus(name, run, server_env)
            if not database_url:  # one SQLite home: the first creates it, then the second starts
                wait_http(f"http://127.0.0.1:{ports[name]}/v2/health/ready", deadline_s, processes[name])
        for name in processes:
            wait_http(f"http://127.0.0.1:{ports[name]}/v2/health/ready", deadline_s, processes[name])
        ready["servers"] = {
            name: {"port": ports[name], "pid": processes[name].pid, "sock": str(run / f"{name}.sock")}
            for name in processes
        }
        ready["admin_key"] = _admin_key(run, database_url)
        ready["driver_pid"] = os.getpid()
        (run / "ready.json.tmp").write_text(json.dumps(ready))
        asyncio.run(serve_forever(run, ports, envs))
    except BaseException as exc:
        (run / "error.txt").write_text(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        for stop in cleanup:
            with contextlib.suppress(Exception):
                stop()
        for process in descendants():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process, signal.SIGTERM)
        time.sleep(0.5)
        kill_all()
        for folder in TEMP_DIRS:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
