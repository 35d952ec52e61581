"""The CLI in a subprocess against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LiveServer, run_cli, scaled
from onnx_factory import affine_model

pytestmark = pytest.mark.slow


def test_register_a_user_onnx_and_serve_it_through_v1_and_v2(live_server: LiveServer, tmp_path: Path) -> None:
    model = tmp_path / "user-model.onnx"
    model.write_bytes(affine_model(scale=3.0, offset=0.5))
    out = run_cli(
        "models",
        "register",
        "user-model",
        str(model),
        "--description",
        "y=3x+0.5",
        "--json",
        url=live_server.url,
    )
    info = json.loads(out.stdout)
    assert info["version"] == 1 and info["signature"]["inputs"][0]["name"] == "x"

    v2 = live_server.post(
        f"{live_server.url}/v2/models/user-model/infer",
        json={"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
    ).json()
    assert v2["outputs"][0]["data"] == [3.5, 6.5, 9.5]
    v1 = live_server.post(f"{live_server.url}/v1/models/user-model:predict", json={"instances": [[1, 2, 3]]}).json()
    assert v1 == {"predictions": [[3.5, 6.5, 9.5]]}

    out = run_cli("predict", "user-model", "--data", "[[1, 2, 3]]", "--json", url=live_server.url)
    assert json.loads(out.stdout) == {"predictions": [[3.5, 6.5, 9.5]]}
    run_cli("alias", "set", "user-model", "production", "1", url=live_server.url)
    listing = json.loads(run_cli("models", "list", "--json", url=live_server.url).stdout)
    assert {"iris", "digits", "user-model"} <= {m["name"] for m in listing}
    assert next(m for m in listing if m["name"] == "user-model")["aliases"] == {"production": 1}
    table = run_cli("models", "show", "user-model", url=live_server.url).stdout
    assert "user-model" in table and "production" in table
    run_cli("alias", "set", "user-model", "production", "1", url=live_server.url)


def test_predict_prints_a_table_and_v2_bodies_work(live_server: LiveServer) -> None:
    out = run_cli("predict", "iris", "--data", "[[5.1, 3.5, 1.4, 0.2]]", url=live_server.url)
    assert "label" in out.stdout and "predictions" in out.stdout
    body = '{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [6.7, 3.0, 5.2, 2.3]}]}'
    out = run_cli("predict", "iris", "--version", "1", "--data", body, "--json", url=live_server.url)
    result = json.loads(out.stdout)
    assert next(o for o in result["outputs"] if o["name"] == "label")["data"] == [2]


def test_errors_are_one_readable_line_and_exit_1(live_server: LiveServer, tmp_path: Path) -> None:
    out = run_cli("models", "show", "no-such-model", url=live_server.url, check=False)
    assert out.returncode == 1 and "model 'no-such-model' does not exist" in out.stderr
    bad = tmp_path / "model.pkl"
    bad.write_bytes(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.")
    out = run_cli("models", "register", "bad", str(bad), url=live_server.url, check=False)
    assert out.returncode == 1 and "pickle" in out.stderr.lower()
    out = run_cli("predict", "iris", "--data", "{not json", url=live_server.url, check=False)
    assert out.returncode == 1 and "not valid JSON" in out.stderr
    out = run_cli("models", "list", url="http://127.0.0.1:9", check=False)
    assert out.returncode == 1 and "cannot reach the server" in out.stderr


def test_delete_asks_and_deletes(live_server: LiveServer, tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(affine_model())
    run_cli("models", "register", "to-delete", str(model), url=live_server.url)
    out = run_cli("models", "delete", "to-delete", url=live_server.url, check=False, input="n\n")
    assert out.returncode == 1
    run_cli("models", "delete", "to-delete", "--yes", url=live_server.url)
    assert live_server.get(f"{live_server.url}/api/v1/models/to-delete").status_code == 404


#: What a command-line call must not pay for unless its command needs it (issue #14: the CLI took 2 s).
HEAVY = ("numpy", "onnx", "onnxruntime", "sqlalchemy", "fastapi", "uvicorn", "torch", "sklearn")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["models", "--help"],
        ["models", "list"],
        ["predict", "iris", "--data", "[[5.1, 3.5, 1.4, 0.2]]", "--json"],
        ["jobs", "list"],
    ],
    ids=["help", "models-help", "models-list", "predict", "jobs-list"],
)
def test_a_command_imports_only_what_it_needs(live_server: LiveServer, args: list[str]) -> None:
    # The console script's entry point, run in a fresh interpreter that then reports what got imported.
    code = (
        "import sys\nfrom stratus.cli import main\nsys.argv = ['stratus', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\nelse:\n    code = 0\n"
        f"print('IMPORTED', sorted(m for m in {HEAVY!r} if m in sys.modules), code)\n"
    )
    env = {**os.environ, "STRATUS_URL": live_server.url, "STRATUS_HOME": str(live_server.home)}
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=scaled(60)
    )
    last = result.stdout.strip().splitlines()[-1]
    assert last == "IMPORTED [] 0", f"{last}\n{result.stderr}"
