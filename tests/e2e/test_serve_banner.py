"""What `stratus serve` prints a newcomer must work when pasted."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import LiveServer, scaled
from stratus.cli.serve import banner
from stratus.settings import Settings

pytestmark = pytest.mark.slow


def test_banner_examples_run(live_server: LiveServer) -> None:
    """Pasted as printed, on the same machine: the curl line reads the admin key file, the SDK finds it."""
    import os

    text = banner(Settings(host="127.0.0.1", port=live_server.port, home=live_server.home), "stk_shown_once")
    assert f"admin key: {live_server.home / 'admin.key'}" in text and "stk_shown_once" in text
    curl = text.split("Predict with curl (Open Inference Protocol / KServe V2):\n", 1)[1].split("\n\n", 1)[0]
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", curl], capture_output=True, text=True, timeout=scaled(60)
    )
    assert result.returncode == 0 and '"label"' in result.stdout, result.stdout + result.stderr
    python = textwrap.dedent(text.split("Or from Python:\n", 1)[1])
    env = {**os.environ, "STRATUS_HOME": str(live_server.home)}
    result = subprocess.run([sys.executable, "-c", python], capture_output=True, text=True, timeout=scaled(60), env=env)
    assert result.returncode == 0, result.stderr
    assert "'label': array([0])" in result.stdout
