"""Dataset pages: the list with the upload form, a dataset (schema, profile as histograms and class balance,
the versions trained on it, start training), and one row of it for the "try it" panel."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from stratus.errors import InvalidInput
from stratus.training.datasets import parse
from stratus.training.params import SKLEARN_MODELS, TORCH_MODELS
from stratus.ui.pages import svg
from stratus.ui.pages.common import size
from stratus.ui.session import host_of, require
from stratus.ui.templating import render

router = APIRouter()
BUILTINS = ("iris", "wine", "breast_cancer", "digits", "diabetes")
#: Histograms drawn on a dataset's page; a wide dataset lists the rest in its table only.
MAX_HISTOGRAMS = 24


def trainers_for(dataset: dict[str, Any]) -> list[str]:
    """The trainers that apply to a dataset, as training.params.check_applicable judges them."""
    kinds = [f["kind"] for f in dataset["schema"].get("features", [])]
    if "image" in dataset["schema"]:
        return ["cnn", "mlp"]
    if kinds.count("text") == 1:
        return ["text_classifier", "rnn", "transformer"]
    if "sequence" in kinds:
        return ["rnn", "transformer"]
    task = dataset["task"]
    sklearn = [m for m in SKLEARN_MODELS if not (m == "linear_regression" and task != "regression")]
    sklearn = [m for m in sklearn if not (m == "logistic_regression" and task != "classification")]
    return [*sklearn, *(m for m in TORCH_MODELS if m == "mlp")]


@router.get("/datasets")
async def dataset_list(request: Request) -> Response:
    datasets = await run_in_threadpool(host_of(request).datasets.list_datasets)
    return render(request, "pages/datasets.html", title="Datasets", datasets=datasets, builtins=BUILTINS, size=size)


def _dataset_data(request: Request, name: str) -> dict[str, Any]:
    host = host_of(request)
    dataset = host.datasets.get(name)
    profile = dataset["profile"]
    histograms = []
    for feature, stats in list((profile.get("features") or {}).items())[:MAX_HISTOGRAMS]:
        hist = stats.get("histogram") or (stats.get("words") or {}).get("histogram")
        if hist:
            histograms.append((feature, svg.histogram(hist["counts"], hist["edges"], f"Histogram of {feature}"), stats))
    for i, stats in enumerate(profile.get("channels") or []):
        hist = stats.get("histogram")
        if hist:
            drawing = svg.histogram(hist["counts"], hist["edges"], f"Pixels of channel {i}")
            histograms.append((f"channel {i}", drawing, stats))
    balance = profile.get("class_distribution")
    balance_svg = svg.bars(list(balance.items()), f"Rows per class in {name}") if balance else None
    target = profile.get("target")
    target_svg = (
        svg.histogram(target["histogram"]["counts"], target["histogram"]["edges"], "Histogram of the target")
        if target and target.get("histogram")
        else None
    )
    versions = host.registry.versions_on_dataset(f"{name}@{dataset['digest']}")
    return {
        "dataset": dataset,
        "histograms": histograms,
        "balance": balance_svg,
        "target_hist": target_svg,
        "versions": versions,
        "trainers": trainers_for(dataset),
        "size": size,
    }


@router.get("/datasets/{name}")
async def dataset_page(request: Request, name: str) -> Response:
    data = await run_in_threadpool(_dataset_data, request, name)
    return render(request, "pages/dataset.html", title=f"Dataset {name}", **data)


@router.get("/datasets/{name}/sample")
async def dataset_sample(request: Request, name: str, row: Annotated[int, Query(ge=0, le=10**9)] = 0) -> Response:
    """One row of the dataset as the model's input values and its label, for the "try it" panel. Rows are user
    data, so this needs manage, as reading the inference log's payloads does."""
    require(request, "manage")
    host = host_of(request)

    def load() -> dict[str, Any]:
        record, data = host.datasets.source(name)
        options = record.get("options") or {}
        task = options.get("task") or ("regression" if options.get("builtin") == "diabetes" else None)
        missing = options.get("missing", "error")
        parsed = parse(record["format"], data, target=record["target"], missing=missing, task=task)
        if parsed.text is not None or parsed.categorical is not None:
            raise InvalidInput("rows with text or categorical columns are typed in, not filled from the dataset")
        index = row % parsed.rows
        values = np.asarray(parsed.X[index], dtype=np.float64).ravel()
        label = None
        if parsed.y is not None:
            value = parsed.y[index]
            label = parsed.classes[int(value)] if parsed.classes else float(value)
        return {"row": index, "rows": parsed.rows, "values": [round(float(x), 6) for x in values], "label": label}

    return JSONResponse(await run_in_threadpool(load))
