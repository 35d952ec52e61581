"""What several resource pages share: a version's dataset record, the "try it" and "explain" panels' context,
sizes."""

from __future__ import annotations

from typing import Any

from stratus.errors import NotFound
from stratus.registry.records import VersionInfo
from stratus.ui.host import ConsoleHost
from stratus.ui.pages.views import tryit_spec

#: Where the console's scripts reach the API as the session (stratus.ui.bridge).
BRIDGE = "/ui/bridge"


def dataset_of(host: ConsoleHost, version: VersionInfo) -> dict[str, Any] | None:
    """The dataset a version was trained on, if it is still the same one (its digest) in this project."""
    if not version.dataset or "@" not in version.dataset:
        return None
    name, _, digest = version.dataset.partition("@")
    try:
        record = host.datasets.get(name)
    except NotFound:
        return None
    return record if record["digest"] == digest else None


def tryit(host: ConsoleHost, version: VersionInfo, target: str, infer_path: str) -> dict[str, Any] | None:
    """The "try it" panel of a model, a version or an endpoint: the form's description (views.tryit_spec) and
    the real inference route it posts to, through the bridge (V2 JSON)."""
    dataset = dataset_of(host, version)
    spec = tryit_spec(version, dataset)
    if spec is None:
        return None
    spec["url"] = infer_path  # console.js's Stratus.api prefixes the bridge
    spec["target"] = target
    # Rows of the training dataset fill the form (manage: rows are user data, like the inference log's payloads).
    spec["sample_url"] = f"/ui/datasets/{dataset['name']}/sample" if dataset is not None else None
    return spec


#: Formats the explanation service takes (stratus.explain.service): a single ONNX model, or a text pipeline.
EXPLAINED_FORMATS = ("onnx", "pipeline")


def explain_panel(tryit_panel: dict[str, Any] | None, version: VersionInfo, explain_path: str) -> dict[str, Any] | None:
    """The "explain" panel of a version page: the try-it form's description (the same input fields), posted to the
    version's explain route through the bridge. None where the service explains nothing: no form fits, another
    format, or a pipeline that is no text model (its answer would only ever be a 400)."""
    if tryit_panel is None or version.format not in EXPLAINED_FORMATS:
        return None
    if version.format == "pipeline" and tryit_panel["kind"] != "text":
        return None
    return {**tryit_panel, "url": explain_path}


def size(num: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(num) < 1024 or unit == "GB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return f"{num:.1f} GB"
