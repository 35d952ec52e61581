"""Starts `stratus serve` processes quickly: imports the server once, then forks one server per request.

Used by test_replica_lifeline.py, whose 21 trials each need a fresh server to kill: paying Python's imports
once instead of 21 times keeps the test within the suite's budget on two cores. Each forked child runs the
real `stratus serve` command (the CLI, the platform, uvicorn) and starts its replicas as any server does.

Protocol: one line per server on stdin, ``HOME PORT TAG LOG``; the zygote answers with the server's pid. The
child runs with ``STRATUS_LIFELINE_TRIAL=TAG`` in its environment, which its replicas inherit. Nothing here
starts a thread before forking, so the children are safe to fork.
"""

from __future__ import annotations

import os
import signal
import sys

# The server's imports, done once (what `stratus serve` imports lazily).
import uvicorn  # noqa: F401

import stratus.api
import stratus.platform  # noqa: F401
from stratus.cli import main

TAG = "STRATUS_LIFELINE_TRIAL"


def serve(home: str, port: str, tag: str, log: str) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the server waits for its own children
    os.environ[TAG] = tag
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    # No gRPC: trials may overlap, and every server would want gRPC's default port.
    sys.argv = ["stratus", "serve", "--port", port, "--home", home, "--no-samples", "--grpc-port", "0"]
    try:
        main()
    finally:
        os._exit(0)


def run() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed servers are reaped by the kernel
    for line in sys.stdin:
        home, port, tag, log = line.split()
        pid = os.fork()
        if pid == 0:
            sys.stdin.close()
            serve(home, port, tag, log)
        print(pid, flush=True)


if __name__ == "__main__":
    run()
