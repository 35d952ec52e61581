"""What a job's Ray task runs on a Ray node: the same child process as the local executor, fed and read the same way.

The task gets the child's request.json, its stdin sealed under a one-use key (raycluster.seal), and the key. It
makes a private job folder on the node, starts ``python -m MODULE --job DIR --dataset - --threads N`` through
``stratus.lifeline`` (so the child dies with the task's worker, even when Ray kills it with SIGKILL on a force
cancel or a lost driver), streams each line the child prints back to the server as it comes (a streaming
generator task), and ends with the exit code, the CPU time, the tail of stderr and the files the child wrote,
sealed under the same key. The folder is deleted before the task returns.

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
from collections.abc import Iterator
from pathlib import Path

from stratus import framing
from stratus.raycluster import seal, unseal

#: Messages the task yields: ("line", text) for each line of the child's stdout, then once
#: ("exit", code, cpu_seconds, stderr_tail, sealed_files).
LINE = "line"
EXIT = "exit"


def run_job(module: str, request: bytes, key: bytes, sealed_stdin: bytes, threads: int) -> Iterator[tuple[object, ...]]:
    job_dir = Path(tempfile.mkdtemp(prefix="stratus-job-"))  # mode 0700
    lifeline_read, lifeline_write = os.pipe()
    try:
        (job_dir / "request.json").write_bytes(request)
        stdin = unseal(key, sealed_stdin)
        stderr_path = job_dir / "stderr.log"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
        command = [sys.executable, "-m", "stratus.lifeline", str(os.getpid()), str(lifeline_read), module]
        with open(stderr_path, "wb") as stderr:
            child = subprocess.Popen(
                [*command, "--job", str(job_dir), "--dataset", "-", "--threads", str(threads)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                pass_fds=(lifeline_read,),
                start_new_session=True,
            )
        os.close(lifeline_read)
        yield (LINE, json.dumps({"event": "placed", "executor": "ray", "node": _node(), "worker_pid": os.getpid()}))
        threading.Thread(target=_feed, args=(child, stdin), daemon=True).start()
        try:
            assert child.stdout is not None
            for raw in child.stdout:
                yield (LINE, raw.decode("utf-8", "replace"))
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
        finally:
            # A cancel (KeyboardInterrupt in the task) or any error here: the child and its group go too.
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        code = int(child.returncode)
        files = _collect(job_dir) if code == 0 else {}
        yield (EXIT, code, usage.ru_utime + usage.ru_stime, _tail(stderr_path), seal(framing.pack(files), key)[1])
    finally:
        with contextlib.suppress(OSError):
            os.close(lifeline_write)
        shutil.rmtree(job_dir, ignore_errors=True)


def _node() -> str:
    """The Ray node this task runs on (recorded as the job's first event)."""
    import ray

    return str(ray.get_runtime_context().get_node_id())


def _feed(child: subprocess.Popen[bytes], data: bytes) -> None:
    assert child.stdin is not None
    with contextlib.suppress(BrokenPipeError, OSError), child.stdin:
        child.stdin.write(data)


def _collect(job_dir: Path) -> dict[str, bytes]:
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


__all__ = ["EXIT", "LINE", "run_job"]
