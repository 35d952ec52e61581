"""What a job's Ray actor runs on a Ray node: the same child process as the local executor, fed and read the same way.

``JobRunner.start`` gets the child's request.json, its stdin sealed under a one-use key (raycluster.seal) and the
key. It makes a private job folder on the node (in /dev/shm when there is one: memory, not disk), starts
``python -m MODULE --job DIR --dataset - --threads N`` through ``stratus.lifeline`` (so the child dies with the
actor's worker, even when Ray kills it with SIGKILL on a cancel or a lost driver), and a thread collects each line
the child prints. ``poll`` hands the lines over as they come and, once the child has exited, its exit code, CPU
time, the tail of its stderr and the files it wrote, sealed under the same key; the folder is deleted then.

An actor and polling rather than a streaming generator task: Ray Client (``ray://``) does not support streaming.

Imports only the standard library and stratus leaves: Ray imports this module by name on its workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from stratus import framing
from stratus.raycluster import seal, unseal

PREFIX = "stratus-job-"
#: What ``poll`` returns once the child has exited: (code, cpu_seconds, stderr_tail, sealed_files).
Exit = tuple[int, float, str, bytes]


def job_root() -> str | None:
    """Where job folders go on a node: /dev/shm (memory) when it is there, else the temp dir."""
    shm = "/dev/shm"  # noqa: S108 - a private 0700 folder under it, from mkdtemp
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def sweep(root: str | None) -> None:
    """Remove folders of job actors that died without cleaning up (killed with SIGKILL): the folder's name
    carries its actor's pid."""
    base = Path(root or tempfile.gettempdir())
    for folder in base.glob(f"{PREFIX}*"):
        with contextlib.suppress(ValueError, IndexError, OSError):
            pid = int(folder.name[len(PREFIX) :].split("-")[0])
            if not Path(f"/proc/{pid}").exists():
                shutil.rmtree(folder, ignore_errors=True)


class JobRunner:
    def __init__(self) -> None:
        self._lines: list[str] = []
        self._exit: Exit | None = None
        self._changed = threading.Condition()
        self._child: subprocess.Popen[bytes] | None = None
        self._key = b""

    def start(self, module: str, request: bytes, key: bytes, sealed_stdin: bytes, threads: int) -> dict[str, Any]:
        import ray

        root = job_root()
        sweep(root)
        job_dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root))  # mode 0700
        (job_dir / "request.json").write_bytes(request)
        stdin = unseal(key, sealed_stdin)
        self._key = key
        lifeline_read, lifeline_write = os.pipe()
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
        # A data-parallel training child is itself a Ray driver (training/distributed.py): this cluster's address.
        env["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
        command = [sys.executable, "-m", "stratus.lifeline", str(os.getpid()), str(lifeline_read), module]
        with open(job_dir / "stderr.log", "wb") as stderr:
            self._child = subprocess.Popen(
                [*command, "--job", str(job_dir), "--dataset", "-", "--threads", str(threads)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                pass_fds=(lifeline_read,),
                start_new_session=True,  # its own process group: a stop reaches any grandchildren too
            )
        os.close(lifeline_read)
        threading.Thread(target=_feed, args=(self._child, stdin), daemon=True).start()
        threading.Thread(target=self._collect, args=(job_dir, key, lifeline_write), daemon=True).start()
        return {"node": ray.get_runtime_context().get_node_id(), "worker_pid": os.getpid()}

    def _collect(self, job_dir: Path, key: bytes, lifeline_write: int) -> None:
        child = self._child
        assert child is not None and child.stdout is not None
        try:
            for raw in child.stdout:
                with self._changed:
                    self._lines.append(raw.decode("utf-8", "replace"))
                    self._changed.notify_all()
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = code = os.waitstatus_to_exitcode(status)
            files = _files(job_dir) if code == 0 else {}
            sealed = seal(framing.pack(files), key)[1]
            done: Exit = (code, usage.ru_utime + usage.ru_stime, _tail(job_dir / "stderr.log"), sealed)
        except Exception as exc:  # reported as the job's failure, never a hang
            done = (1, 0.0, f"the job's Ray actor failed: {exc}", seal(framing.pack({}), key)[1])
        finally:
            with contextlib.suppress(OSError):
                os.close(lifeline_write)
            shutil.rmtree(job_dir, ignore_errors=True)
        with self._changed:
            self._exit = done
            self._changed.notify_all()

    def poll(self, after: int, wait_s: float) -> tuple[int, bytes, Exit | None]:
        """How many lines follow the first ``after`` and those lines (sealed under the job's key: a data-parallel
        job's lines carry its checkpoints, and a large reply goes through the object store), waiting up to
        ``wait_s`` for one; the exit once all are read."""
        with self._changed:
            self._changed.wait_for(lambda: len(self._lines) > after or self._exit is not None, timeout=wait_s)
            lines = self._lines[after:]
            exit_ = self._exit if self._exit is not None else None
        return len(lines), seal(json.dumps(lines).encode(), self._key)[1], exit_

    def stop(self) -> None:
        if self._child is not None and self._child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._child.pid, signal.SIGKILL)


def placed_line(info: dict[str, Any]) -> str:
    """The job's first event: where it runs."""
    return json.dumps({"event": "placed", "executor": "ray", "node": info["node"], "worker_pid": info["worker_pid"]})


def _feed(child: subprocess.Popen[bytes], data: bytes) -> None:
    assert child.stdin is not None
    with contextlib.suppress(BrokenPipeError, OSError), child.stdin:
        child.stdin.write(data)


def _files(job_dir: Path) -> dict[str, bytes]:
    """Every file the child wrote, by its path relative to the job folder."""
    files = {}
    for path in sorted(job_dir.rglob("*")):
        relative = path.relative_to(job_dir).as_posix()
        if path.is_file() and relative not in {"request.json", "stderr.log"}:
            files[relative] = path.read_bytes()
    return files


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-12:])
    except OSError:
        return ""


__all__ = ["Exit", "JobRunner", "placed_line", "sweep"]
