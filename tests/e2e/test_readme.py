"""README's examples run against a real server, so the docs cannot rot."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from conftest import ROOT, LiveServer, scaled
from onnx_factory import affine_model

pytestmark = pytest.mark.slow

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(bash|python)\n(.*?)```", README, flags=re.S)


def _adapt(code: str, server: LiveServer, model_path: Path) -> str:
    code = code.replace("127.0.0.1:8080", f"127.0.0.1:{server.port}")
    code = code.replace("127.0.0.1:8081", f"127.0.0.1:{server.grpc_port}")
    # The server under test keeps its admin key in its own home, not in ~/.stratus.
    code = code.replace("~/.stratus/admin.key", shlex.quote(str(server.home / "admin.key")))
    code = code.replace('Path.home() / ".stratus" / "admin.key"', f"Path({str(server.home / 'admin.key')!r})")
    code = code.replace("path/to/model.onnx", str(model_path))
    return code.replace(".venv/bin/stratus", f"{shlex.quote(sys.executable)} -m stratus")


def test_readme_opens_with_the_two_commands() -> None:
    first_block = BLOCKS[0][1]
    assert first_block.splitlines()[0].startswith("make serve")
    assert first_block.splitlines()[1].startswith("make test")


@pytest.mark.parametrize("index", range(1, len(BLOCKS)))
def test_readme_example_runs(index: int, live_server: LiveServer, tmp_path: Path) -> None:
    lang, code = BLOCKS[index]
    model_path = tmp_path / "model.onnx"
    model_path.write_bytes(affine_model())
    onnx.checker.check_model(str(model_path))
    code = _adapt(code, live_server, model_path)
    env = {**os.environ, "STRATUS_URL": live_server.url, "STRATUS_HOME": str(live_server.home)}
    if lang == "bash":
        # Register before aliasing works only once per server: use a fresh model name per block.
        code = code.replace("my-model", f"my-model-{index}").replace("team-a", f"team-{index}")
        # Fewer epochs than the README's: the example's path is the same, and the suite stays short.
        code = re.sub(r"--epochs \d+", "--epochs 3", code)
        # And a shorter AutoML budget than the README's 5 minutes (the search, refit and registration are the same).
        code = re.sub(r"--budget \S+", "--budget 30s", code)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code],
            capture_output=True,
            text=True,
            env=env,
            timeout=scaled(150),
            cwd=tmp_path,
        )
    else:
        code = code.replace("my-iris", f"my-iris-{index}")
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=scaled(150)
        )
    assert result.returncode == 0, f"{code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert '"error"' not in result.stdout, result.stdout
    # A block may say what it prints ("# prints: ..."): the README's claim is checked, not only that it runs.
    for expected in re.findall(r"^# prints: (.+)$", code, flags=re.M):
        assert expected.strip() in result.stdout, f"{expected!r} not printed:\n{result.stdout}"
