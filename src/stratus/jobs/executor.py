"""Where a job's work runs. The local-process executor is the default: a child process per job, so a
crash or OOM in training never takes the server down. A Ray executor can take its place behind the
same small interface."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class WorkItem:
    job_id: str
    job_dir: Path
    #: Handed to the child on its stdin, so the decrypted dataset never touches the disk.
    dataset: bytes
    threads: int
    module: str = "stratus.training.worker"


class RunningWork(Protocol):
    def lines(self) -> Iterator[str]: ...

    def wait(self) -> int: ...

    def stop(self) -> None: ...

    def cpu_seconds(self) -> float: ...

    def stderr_tail(self) -> str: ...


class Executor(Protocol):
    def start(self, item: WorkItem) -> RunningWork: ...


class _ChildProcess:
    def __init__(self, item: WorkItem) -> None:
        self._stderr = item.job_dir / "stderr.log"
        env = {**os.environ, "OMP_NUM_THREADS": str(item.threads), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
        with open(self._stderr, "wb") as stderr:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    item.module,
                    "--job",
                    str(item.job_dir),
                    "--dataset",
                    "-",
                    "--threads",
                    str(item.threads),
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.PIPE,
                env=env,
                start_new_session=True,  # its own process group: stop() reaches any grandchildren too
            )
        self._usage: float = 0.0
        threading.Thread(target=self._feed, args=(item.dataset,), daemon=True).start()

    def _feed(self, data: bytes) -> None:
        """Write the dataset to the child's stdin from a thread: the pipe holds only 64 KiB."""
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError), self.process.stdin:
            self.process.stdin.write(data)

    def lines(self) -> Iterator[str]:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            yield raw.decode("utf-8", "replace")

    def wait(self) -> int:
        """Reap the child with wait4, which also reports the CPU time it used (for usage metering)."""
        if self.process.returncode is None:
            try:
                _, status, usage = os.wait4(self.process.pid, 0)
            except ChildProcessError:
                return self.process.wait()
            self._usage = usage.ru_utime + usage.ru_stime
            self.process.returncode = os.waitstatus_to_exitcode(status)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return int(self.process.returncode)

    def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def cpu_seconds(self) -> float:
        return self._usage

    def stderr_tail(self) -> str:
        try:
            lines = self._stderr.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-12:])


class LocalProcessExecutor:
    def start(self, item: WorkItem) -> RunningWork:
        return _ChildProcess(item)
