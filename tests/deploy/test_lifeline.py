"""stratus.lifeline, each of its three guards on its own: the parent-death signal, the parent check, the pipe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import scaled

#: A module that serves until killed: what the lifeline runs in these tests in place of a replica.
FOREVER = ["http.server", "0", "--bind", "127.0.0.1"]


def _gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


def test_a_parent_that_died_before_the_signal_was_set_is_noticed() -> None:
    """The expected parent is not the process's parent (it died and the child was re-parented): exit at once,
    before the module is even imported."""
    read, write = os.pipe()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "stratus.lifeline", "1", str(read), "no_such_module_would_fail"],
            pass_fds=(read,),
            capture_output=True,
            timeout=scaled(30),
        )
    finally:
        os.close(read)
        os.close(write)
    assert result.returncode == 0 and result.stderr == b""


def test_the_pipe_closing_ends_the_process() -> None:
    read, write = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-m", "stratus.lifeline", str(os.getpid()), str(read), *FOREVER],
        pass_fds=(read,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(read)
    try:
        assert not _gone(child.pid, 0.5)  # it runs while the pipe is open
        os.close(write)
        assert child.wait(timeout=scaled(10)) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_the_parent_death_signal_ends_the_process_even_with_the_pipe_open() -> None:
    """An intermediate parent starts the lifeline, then is killed. The pipe's write end stays open here, in
    the test, so only the kernel's parent-death signal can end the grandchild."""
    read, write = os.pipe()
    parent_code = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        child = subprocess.Popen(
            [sys.executable, "-m", "stratus.lifeline", str(os.getpid()), "{read}", *{FOREVER!r}],
            pass_fds=({read},), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        print(child.pid, flush=True)
        time.sleep(3600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], pass_fds=(read,), stdout=subprocess.PIPE)
    assert parent.stdout is not None
    grandchild = int(parent.stdout.readline())
    try:
        assert not _gone(grandchild, 0.5)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _gone(grandchild, scaled(5)), "the grandchild outlived its parent"
    finally:
        parent.stdout.close()
        os.close(read)
        os.close(write)
        if not _gone(grandchild, 0):
            os.kill(grandchild, signal.SIGKILL)
