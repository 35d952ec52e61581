"""The architecture's rules, checked on the real import graph and in real processes.

- The layer table (pyproject.toml, [tool.importlinter]) holds: import-linter checks it over grimp's graph.
- No import cycle anywhere in the package (a strongly connected component of grimp's module graph).
- HTTP stays in api/ (and grpc/ for gRPC); torch stays out of the serving modules' top level.
- After the app is created and has served, the server's process has loaded neither torch nor scikit-learn,
  and a replica's process no SQLAlchemy, jobs, compression or training module.
- One private-file writer in src/.
"""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path

import grimp

from conftest import ROOT, scaled
from onnx_factory import affine_model
from stratus.deploy import bundle
from stratus.registry.records import VersionInfo
from stratus.types import Signature, TensorSpec

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


# -- the import graph -------------------------------------------------------------------------------------


def test_the_layer_contracts_hold() -> None:
    """import-linter over the package, with the contracts in pyproject.toml (layers, the store, api/)."""
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(linter), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The import cycles of a graph: its strongly connected components of more than one module (Tarjan,
    iterative so a long chain cannot exhaust the stack), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(edges.get(root, ())))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, ()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": [], "e": ["e2"], "e2": ["e"], "f": ["a"]}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["e", "e2"]]
    assert cycles({"a": ["b"], "b": []}) == []


def test_no_import_cycles_anywhere_in_the_package() -> None:
    """Every import counts, at module level or inside a function: a lazy import is still a dependency."""
    graph = grimp.build_graph("stratus", cache_dir=None)
    edges = {module: sorted(graph.find_modules_directly_imported_by(module)) for module in graph.modules}
    assert cycles(edges) == []


def test_only_the_protocol_adapters_import_fastapi_starlette_or_grpc() -> None:
    # federated/: the relay between a federated job's child and its clients (docs/federated.md) is gRPC too; the
    # server imports only federated/service.py, which imports no grpc.
    adapters = {"fastapi": ("api", "ui"), "starlette": ("api", "ui"), "grpc": ("grpc", "federated")}
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in PACKAGE.rglob("*.py")
        for name in imports_of(path)
        if name.split(".")[0] in adapters and path.relative_to(PACKAGE).parts[0] not in adapters[name.split(".")[0]]
    ]
    assert offenders == []


def test_training_and_jobs_do_not_import_the_api() -> None:
    for package in ("training", "jobs", "registry", "runtime", "store", "formats"):
        for path in (PACKAGE / package).rglob("*.py"):
            assert not any(n.startswith("stratus.api") for n in imports_of(path)), path


def test_serving_modules_never_import_torch_at_module_level() -> None:
    serving = ["api", "runtime", "registry", "store", "formats", "dataplane.py", "platform.py", "jobs", "deploy"]
    for part in serving:
        paths = [PACKAGE / part] if part.endswith(".py") else list((PACKAGE / part).rglob("*.py"))
        for path in paths:
            assert not any(n.split(".")[0] in ("torch", "sklearn") for n in top_level_imports_of(path)), path


def test_one_private_file_writer() -> None:
    """Secrets are written by stratus.files.write_private only (0600 from creation, fsync of the directory)."""
    writers = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "0o600" in p.read_text()]
    assert writers == ["files.py"]


# -- what real processes load ---------------------------------------------------------------------------

_SERVER = """
import json, sys
from pathlib import Path
from fastapi.testclient import TestClient
from stratus.platform import create_app
from stratus.settings import Settings

settings = Settings(home=Path(sys.argv[1]), samples=False, allowed_hosts=["testserver"], intra_op_threads=1)
with TestClient(create_app(settings)) as client:
    client.headers["Authorization"] = "Bearer " + settings.resolved_admin_key_file.read_text().strip()
    created = client.post("/api/v1/datasets/builtin", json={"name": "iris"})
    assert created.status_code == 201, created.text
    assert client.get("/api/v1/datasets/iris").json()["rows"] == 150
    assert client.get("/v2/health/ready").status_code == 200
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "sklearn"))))
"""

_REPLICA = """
import json, sys
from pathlib import Path
from fastapi.testclient import TestClient
from stratus.api.serving import create_endpoint_app
from stratus.deploy.bundle import BundleCatalog
import stratus.cli.endpoint_server  # the replica's entry module, with everything it imports

app = create_endpoint_app(BundleCatalog.from_dir(Path(sys.argv[1])), key_sha256=None, threads=1)
with TestClient(app) as client:
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    answer = client.post("/v2/models/ep/infer", json=body)
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [3, 5, 7], answer.text
forbidden = ("sqlalchemy", "alembic", "torch", "sklearn", "stratus.jobs", "stratus.compress", "stratus.training",
             "stratus.platform", "stratus.store.db", "stratus.registry.service")
print(json.dumps(sorted(m for m in sys.modules if m.startswith(forbidden))))
"""


def _run(script: str, *args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=scaled(120), check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_the_server_process_loads_neither_torch_nor_scikit_learn(tmp_path: Path) -> None:
    """Created, started, and asked for a built-in dataset (scikit-learn's data, loaded in a child)."""
    assert _run(_SERVER, str(tmp_path / "home")) == []


def test_a_replica_loads_no_database_jobs_compression_or_training(tmp_path: Path) -> None:
    model = affine_model()
    digest = "sha256:" + hashlib.sha256(model).hexdigest()
    signature = Signature((TensorSpec("x", "FP32", (-1, 3)),), (TensorSpec("y", "FP32", (-1, 3)),))
    version = VersionInfo(
        1, "affine", 1, digest, len(model), "onnx", signature, {}, {}, {}, None, None, None, "", "active",
        "healthy", "", datetime(2026, 1, 1), (), {},
    )  # fmt: skip
    entries = bundle.build("ep", [bundle.Route("affine", 1, 100)], lambda m, v: version, lambda v, d: model)
    bundle.write_dir(entries, tmp_path / "bundle")
    assert _run(_REPLICA, str(tmp_path / "bundle")) == []
