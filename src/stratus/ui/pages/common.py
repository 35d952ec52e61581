"""What several resource pages share: a version's dataset record, the "try it" panel's context, sizes."""

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


def size(num: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(num) < 1024 or unit == "GB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return f"{num:.1f} GB"
