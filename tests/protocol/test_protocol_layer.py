"""stratus.protocol is the protocols as data: no web framework, HTTP client or gRPC in it, so the API, the
gRPC service, the router, the SDK and an edge runner can all use it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import stratus.protocol

FORBIDDEN = ("fastapi", "starlette", "httpx", "uvicorn", "grpc", "h11", "anyio")
PACKAGE = Path(stratus.protocol.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_of_the_protocol_layer_imports_a_transport() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) >= 7
    for module in modules:
        assert not _imports(module) & set(FORBIDDEN), module.name
        assert len(module.read_text().splitlines()) < 500, module.name


def test_importing_it_loads_no_transport() -> None:
    code = "import sys, stratus.protocol; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not [name for name in FORBIDDEN if f"'{name}'" in loaded], loaded
