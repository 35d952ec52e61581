"""The architecture's rules, checked on the source: HTTP stays in api/, torch stays out of serving."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "stratus"


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def top_level_imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_http_adapters_import_fastapi_or_starlette() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).parts[0] != "api"
        and any(name.split(".")[0] in ("fastapi", "starlette") for name in imports_of(path))
    ]
    assert offenders == []


def test_training_and_jobs_do_not_import_the_api() -> None:
    for package in ("training", "jobs", "registry", "runtime", "store", "formats"):
        for path in (PACKAGE / package).rglob("*.py"):
            assert not any(n.startswith("stratus.api") for n in imports_of(path)), path


def test_serving_modules_never_import_torch_at_module_level() -> None:
    serving = ["api", "runtime", "registry", "store", "formats", "dataplane.py", "platform.py", "jobs"]
    for part in serving:
        paths = [PACKAGE / part] if part.endswith(".py") else list((PACKAGE / part).rglob("*.py"))
        for path in paths:
            assert not any(n.split(".")[0] == "torch" for n in top_level_imports_of(path)), path
