"""The first code a replica process runs: tie its life to its server's before anything else.

``python -m stratus.lifeline PARENT_PID FD MODULE ARGS...`` (see deploy/replicas.py). Importing the serving
stack takes a replica about a second; a server killed in that second used to leave replicas that noticed
their parent's death only once their imports were done, and some never did (found re-parented to PID 1).
So, before any heavy import, this module:

1. asks the kernel to SIGKILL it when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``). The signal follows
   the death of the parent *thread* that forked, so the server spawns replicas from one thread that lives as
   long as the process (``replicas.Spawner``);
2. checks that ``getppid()`` is still the server: a parent that died before step 1 would never signal;
3. watches a pipe whose write end only the server holds: when the server dies (or closes its placement) the
   kernel closes it, the read returns end-of-file and the replica exits. This covers systems without prctl
   and a parent thread that ended anyway.

Only the standard library is imported here, and stratus/__init__.py is import-free, so all of this runs in
the first milliseconds of the process.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` when the parent dies; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def watch_pipe(fd: int) -> None:
    """Exit at once when the pipe ``fd`` reaches end-of-file: its only writer, the server, is gone."""

    def watch() -> None:
        while True:
            try:
                if not os.read(fd, 4096):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        os._exit(0)

    threading.Thread(target=watch, name="stratus-lifeline", daemon=True).start()


def arm(parent: int, fd: int) -> None:
    set_parent_death_signal()
    if os.getppid() != parent:
        os._exit(0)  # the server died before the signal was set: nobody would ever send it
    watch_pipe(fd)


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        raise SystemExit("usage: python -m stratus.lifeline PARENT_PID FD MODULE [ARGS...]")
    arm(int(argv[0]), int(argv[1]))
    module = argv[2]
    sys.argv = [module, *argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
