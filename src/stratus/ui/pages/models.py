"""Model pages: the paged list, a model (versions, aliases, lineage graph, comparison, try it), a version
(signature, evaluation with the confusion matrix as a heat map, try it, explain) and the side-by-side comparison."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from stratus.errors import InvalidInput, NotFound
from stratus.registry import DEFAULT_ALIAS
from stratus.registry.records import VersionInfo
from stratus.ui.pages import svg, views
from stratus.ui.pages.common import explain_panel, size, tryit
from stratus.ui.session import host_of
from stratus.ui.templating import render

router = APIRouter()

Search = Annotated[str, Query(max_length=64)]
PageArg = Annotated[str | None, Query(max_length=6)]
#: Most versions side by side on the comparison page.
MAX_COMPARED = 6
#: Scalar metrics shown as columns of the versions table (the rest are on each version's page).
METRIC_COLUMNS = 4


def _metric_columns(versions: list[VersionInfo]) -> list[str]:
    names: list[str] = []
    for v in versions:
        for key, value in v.metrics.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and key not in names:
                names.append(key)
    # dp_epsilon: a DP-SGD version's spent privacy budget goes beside its accuracy (docs/privacy.md).
    preferred = [n for n in ("test_accuracy", "accuracy", "dp_epsilon", "quality_drop", "speedup", "r2") if n in names]
    return (preferred + [n for n in names if n not in preferred])[:METRIC_COLUMNS]


@router.get("/models")
async def model_list(request: Request, page: PageArg = None, q: Search = "") -> Response:
    number = views.page_number(page)
    host = host_of(request)
    models, total = await run_in_threadpool(
        host.registry.page_models, (number - 1) * views.PAGE_SIZE, views.PAGE_SIZE, q
    )
    paging = views.Paging(number, views.PAGE_SIZE, total)
    return render(request, "pages/models.html", title="Models", models=models, paging=paging, q=q)


def _model_data(request: Request, name: str) -> dict[str, Any]:
    host = host_of(request)
    model = host.registry.get_model(name)
    versions = host.registry.list_versions(name)
    nodes, edges = views.lineage(name, versions, "/ui")
    panel = None
    served = _served(model.aliases, versions)
    if served is not None:
        panel = tryit(host, served, f"model {name} (version {served.version})", f"/v2/models/{name}/infer")
    return {
        "model": model,
        "versions": sorted(versions, key=lambda v: -v.version),
        "columns": _metric_columns(versions),
        "graph": svg.lineage(nodes, edges, f"Lineage of model {name}: datasets, jobs, versions, compressed variants"),
        "served": served,
        "tryit": panel,
        "size": size,
    }


def _served(aliases: dict[str, int], versions: list[VersionInfo]) -> VersionInfo | None:
    """What the model's name serves, as RegistryService.resolve(name) picks it (the production alias, else the
    newest active version), from the versions already read."""
    by_number = {v.version: v for v in versions}
    if DEFAULT_ALIAS in aliases and aliases[DEFAULT_ALIAS] in by_number:
        return by_number[aliases[DEFAULT_ALIAS]]
    active = [v for v in versions if v.status == "active"]
    return max(active, key=lambda v: v.version) if active else None


@router.get("/models/{name}")
async def model_page(request: Request, name: str) -> Response:
    data = await run_in_threadpool(_model_data, request, name)
    return render(request, "pages/model.html", title=f"Model {name}", **data)


def _version_data(request: Request, name: str, number: int) -> dict[str, Any]:
    host = host_of(request)
    model = host.registry.get_model(name)
    every = host.registry.list_versions(name)
    version = next((v for v in every if v.version == number), None)
    if version is None:
        raise NotFound(f"model {name!r} has no version {number}")
    metrics = version.metrics
    classes = views.classes_of(metrics)
    matrix = metrics.get("confusion_matrix")
    heat = None
    if isinstance(matrix, list) and classes and len(matrix) == len(classes):
        title = f"Confusion matrix of {name} version {number}: rows true, columns predicted"
        heat = svg.heatmap(matrix, classes, title)
    rows = views.per_class(metrics)
    recall = svg.bars([(r["name"], round(float(r["recall"]), 3)) for r in rows], "Recall per class") if rows else None
    precision = (
        svg.bars([(r["name"], round(float(r["precision"]), 3)) for r in rows], "Precision per class") if rows else None
    )
    children = [v for v in every if v.parent_version == number]
    facts = views.version_facts(version)
    scalar_metrics = {k: v for k, v in facts.items() if k.startswith("metrics.")}
    params = {k: v for k, v in facts.items() if k.startswith("params.")}
    panel = tryit(host, version, f"{name} version {number}", f"/v2/models/{name}/versions/{number}/infer")
    explain = explain_panel(panel, version, f"/v2/models/{name}/versions/{number}/explain")
    job_id = version.params.get("job_id")
    return {
        "model": model,
        "version": version,
        "metrics": scalar_metrics,
        "params": params,
        "heatmap": heat,
        "per_class": rows,
        "recall": recall,
        "precision": precision,
        "children": children,
        "tryit": panel,
        "explain": explain,
        "job_id": job_id if isinstance(job_id, str) else None,
        "compressed": "compression_method" in version.params,
        "size": size,
    }


@router.get("/models/{name}/versions/{version}")
async def version_page(request: Request, name: str, version: int) -> Response:
    if not 1 <= version <= 2**31:
        raise InvalidInput("a version is a number from 1")
    data = await run_in_threadpool(_version_data, request, name, version)
    return render(request, "pages/version.html", title=f"{name} version {version}", **data)


@router.get("/models/{name}/compare")
async def compare_page(
    request: Request,
    name: str,
    v: Annotated[list[int] | None, Query(max_length=MAX_COMPARED)] = None,
    diff: Annotated[str | None, Query(max_length=3)] = None,
) -> Response:
    """Two or more versions side by side; ``diff`` shows only the facts that differ."""
    host = host_of(request)

    def load() -> tuple[list[VersionInfo], list[VersionInfo]]:
        every = host.registry.list_versions(name)
        wanted = list(dict.fromkeys(v or []))
        if not wanted:  # the two newest, a useful default
            wanted = sorted((x.version for x in every), reverse=True)[:2]
        found = {x.version: x for x in every}
        missing = [n for n in wanted if n not in found]
        if missing:
            raise InvalidInput(f"model {name!r} has no version {missing[0]}")
        return [found[n] for n in wanted], every

    chosen, every = await run_in_threadpool(load)
    only = diff in ("1", "on", "yes")
    rows = views.compare(chosen, only)
    return render(
        request,
        "pages/compare.html",
        title=f"Compare versions of {name}",
        name=name,
        chosen=chosen,
        every=sorted(every, key=lambda x: -x.version),
        rows=rows,
        only=only,
    )
