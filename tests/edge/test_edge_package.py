"""The runner's package: built from edge/ into a wheel and installed into a fresh virtualenv, it holds the runner
and only the platform modules it shares (the protocol codec, error kinds, tensor types, the ONNX runtime
wrapper), declares only its small dependency list, whose installed closure holds no torch and nothing of the
platform's server; and the installed runner imports and runs against those dependencies alone.

Offline and fast: the wheel is built without build isolation, installed with --no-deps by this venv's pip
(``pip --python``), and the dependencies the fresh venv lacks are the ones already installed here, reached
through PYTHONPATH (no .pth processing, so the platform's editable install is not on that path)."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import scaled

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {"numpy", "onnxruntime", "orjson", "pydantic", "cryptography", "uvicorn", "httptools", "uvloop"}
#: Never in the runner's dependency closure, nor imported by it: the platform's server, database and training.
FORBIDDEN = {
    "torch",
    "sqlalchemy",
    "alembic",
    "fastapi",
    "starlette",
    "scikit-learn",
    "sklearn",
    "scipy",
    "grpcio",
    "grpc",
    "ray",
    "typer",
    "prometheus-client",
    "prometheus_client",
    "httpx",
    "pyarrow",
    "onnx",
    "transformers",
}
SHARED = {
    "stratus/__init__.py",
    "stratus/errors.py",
    "stratus/files.py",
    "stratus/types.py",
    "stratus/version.py",
    "stratus/py.typed",
}


def _name(text: str) -> str:
    return text.lower().replace("_", "-")


def _closure(requirements: list[str]) -> set[str]:
    """Distributions the requirements pull in, transitively, as installed here (markers evaluated, extras off)."""
    seen: set[str] = set()
    pending = [Requirement(r) for r in requirements]
    while pending:
        req = pending.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _name(req.name)
        if name in seen:
            continue
        seen.add(name)
        pending += [Requirement(r) for r in metadata.requires(req.name) or []]
    return seen


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("edge-package")
    wheels = tmp / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT / "edge"),
        ],
        check=True,
        timeout=scaled(60),
    )
    wheel = next(wheels.glob("stratus_edge-*.whl"))
    env = tmp / "venv"
    venv.EnvBuilder(with_pip=False, clear=True).create(env)
    python = env / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=scaled(60),
    )
    return {"wheel": wheel, "venv": env, "python": python}


def test_wheel_holds_the_runner_and_only_the_shared_platform_modules(installed: dict[str, Path]) -> None:
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    platform = {n for n in names if n.startswith("stratus/")}
    allowed_dirs = ("stratus/protocol/", "stratus/runtime/")
    assert {n for n in platform if not n.startswith(allowed_dirs)} == SHARED
    runtime = {n.removeprefix("stratus/runtime/") for n in platform if n.startswith("stratus/runtime/")}
    assert runtime == {"__init__.py", "batching.py", "config.py", "pool.py", "session.py", "pipeline.py"}
    assert any(n.startswith("stratus_edge/") for n in names)
    # The fresh venv lists exactly the runner's distribution and the two packages it installed.
    site = Path(sysconfig.get_path("purelib", vars={"base": str(installed["venv"])}))
    listed = sorted(p.name for p in site.iterdir() if not p.name.startswith(("_", "__")))
    assert listed == ["stratus", "stratus_edge", "stratus_edge-0.1.0.dist-info"], listed


def test_dependencies_pull_no_torch_and_no_platform_server(installed: dict[str, Path]) -> None:
    with zipfile.ZipFile(installed["wheel"]) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(meta).decode()
    requires = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Requires-Dist: ")]
    direct = {_name(Requirement(r).name) for r in requires if "extra ==" not in r}
    assert direct == ALLOWED
    closure = _closure([r for r in requires if "extra ==" not in r])
    assert not closure & {_name(f) for f in FORBIDDEN}, sorted(closure)


def test_installed_runner_imports_no_platform_server(installed: dict[str, Path]) -> None:
    """The runner from the fresh venv, its dependencies from this one: it imports, its CLI runs, and nothing of
    the forbidden set is loaded."""
    deps = sysconfig.get_path("purelib")
    probe = (
        "import sys, json; import stratus_edge.cli, stratus_edge.app, stratus_edge.sync, stratus_edge.model; "
        "import uvicorn, stratus; print(json.dumps([stratus.__file__, sorted(m.split('.')[0] for m in sys.modules)]))"
    )
    result = subprocess.run(
        [str(installed["python"]), "-c", probe],
        env={"PYTHONPATH": deps, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=True,
    )
    where, modules = json.loads(result.stdout)
    assert where.startswith(str(installed["venv"])), where  # the wheel's copy, not the platform's source
    assert not set(modules) & FORBIDDEN, sorted(set(modules) & FORBIDDEN)
    help_text = subprocess.run(
        [str(installed["venv"] / "bin" / "stratus-edge"), "--help"],
        env={"PYTHONPATH": deps, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=True,
    ).stdout
    assert "enroll" in help_text and "sync" in help_text
