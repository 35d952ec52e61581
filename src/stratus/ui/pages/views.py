"""What the pages show, computed from the services' records: pure functions, no HTTP and no database.

The comparison of versions, the lineage graph's nodes, the evaluation's per-class rows, paging, and the
"try it" panel's description of a version's input, which its JavaScript (static/tryit.js) builds a form from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stratus.registry.records import VersionInfo
from stratus.ui.pages.svg import Node

PAGE_SIZE = 50


@dataclass(frozen=True)
class Paging:
    page: int
    size: int
    total: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def previous(self) -> int | None:
        return self.page - 1 if self.page > 1 else None

    @property
    def next(self) -> int | None:
        return self.page + 1 if self.page < self.pages else None


def page_number(raw: str | None) -> int:
    """A page number from the query string: anything that is not a positive number is the first page."""
    if raw is None or not raw.isdigit() or len(raw) > 6:
        return 1
    return max(1, int(raw))


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), inner, out)
    elif isinstance(value, list) and value and isinstance(value[0], list):
        return  # a matrix (the confusion matrix) is drawn, not compared cell by cell
    else:
        out[prefix] = value


#: Metrics drawn elsewhere on the page, not rows of the comparison.
_DRAWN = ("per_class", "confusion_matrix")


def version_facts(version: VersionInfo) -> dict[str, Any]:
    """One version as flat named facts, for the side-by-side comparison."""
    facts: dict[str, Any] = {
        "format": version.format,
        "size_bytes": version.size_bytes,
        "status": version.status,
        "health": version.health,
        "aliases": ", ".join(version.aliases) or "",
        "dataset": (version.dataset or "").split("@")[0],
        "source": version.source or "",
        "parent_version": version.parent_version,
        "inputs": "; ".join(f"{t.name} {t.datatype} {list(t.shape)}" for t in version.signature.inputs),
        "outputs": "; ".join(f"{t.name} {t.datatype} {list(t.shape)}" for t in version.signature.outputs),
    }
    metrics: dict[str, Any] = {}
    _flat("", {k: v for k, v in version.metrics.items() if k not in _DRAWN}, metrics)
    facts.update({f"metrics.{k}": v for k, v in sorted(metrics.items())})
    params: dict[str, Any] = {}
    _flat("", version.params, params)
    facts.update({f"params.{k}": v for k, v in sorted(params.items())})
    return facts


def compare(versions: Sequence[VersionInfo], only_differences: bool) -> list[tuple[str, list[str], bool]]:
    """Rows of (fact, the value in each version, whether the values differ); a fact a version lacks is ''."""
    facts = [version_facts(v) for v in versions]
    names: list[str] = []
    for found in facts:
        names.extend(n for n in found if n not in names)
    rows = []
    for name in names:
        values = [_shown(found.get(name)) for found in facts]
        differs = len(set(values)) > 1
        if differs or not only_differences:
            rows.append((name, values, differs))
    return rows


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ", ".join(_shown(v) for v in value)
    return str(value)


def lineage(model: str, versions: Iterable[VersionInfo], prefix: str) -> tuple[list[Node], list[tuple[str, str]]]:
    """dataset -> job -> version -> compressed variants, from the versions' own lineage (dataset, job_id in
    params, parent_version). ``prefix`` is the console's root, for the links."""
    nodes: dict[str, Node] = {}
    edges: list[tuple[str, str]] = []
    for v in sorted(versions, key=lambda v: v.version):
        key = f"v{v.version}"
        variant = v.parent_version is not None and "compression_method" in v.params
        detail = _headline(v.metrics)
        label = f"v{v.version}" + (f" {v.params['compression_method']}" if variant else "")
        nodes[key] = Node(
            key, label, "variant" if variant else "version", f"{prefix}/models/{model}/versions/{v.version}", detail
        )
        job = v.params.get("job_id")
        dataset = (v.dataset or "").split("@")[0]
        if variant:
            source = f"v{v.parent_version}"
            if isinstance(job, str):
                jkey = f"j{job}"
                nodes.setdefault(
                    jkey, Node(jkey, f"compress {job[:8]}", "compression", f"{prefix}/compression/{job}", "job")
                )
                edges += [(source, jkey), (jkey, key)] if (source, jkey) not in edges else [(jkey, key)]
            else:
                edges.append((source, key))
            continue
        source_key = None
        if dataset:
            source_key = f"d{dataset}"
            is_builtin = ":" in dataset
            nodes.setdefault(
                source_key,
                Node(source_key, dataset, "dataset", None if is_builtin else f"{prefix}/datasets/{dataset}", "dataset"),
            )
        if isinstance(job, str):
            jkey = f"j{job}"
            nodes.setdefault(jkey, Node(jkey, f"train {job[:8]}", "job", f"{prefix}/jobs/{job}", "training job"))
            if source_key is not None:
                edges.append((source_key, jkey))
            source_key = jkey
        if source_key is not None:
            edges.append((source_key, key))
    # Variants made by one compression job hang off one job node: the parent -> job edge once.
    return list(nodes.values()), list(dict.fromkeys(edges))


def _headline(metrics: Mapping[str, Any]) -> str:
    for name in ("test_accuracy", "accuracy", "r2", "train_accuracy", "macro_f1"):
        value = metrics.get(name)
        if isinstance(value, int | float):
            return f"{name.replace('_', ' ')} {value:.3f}"
    return ""


def per_class(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The evaluation's per-class precision, recall, F1 and support, in class order."""
    table = metrics.get("per_class")
    if not isinstance(table, Mapping):
        return []
    return [{"name": name, **row} for name, row in table.items() if isinstance(row, Mapping)]


def classes_of(metrics: Mapping[str, Any]) -> list[str]:
    return [str(name) for name in (metrics.get("per_class") or {})]


def tryit_spec(version: VersionInfo, dataset: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """How to build the "try it" form for ``version``: text, image or tabular, with the input's name, type and
    shape, feature names and classes from its dataset, and an image's pixel range. None: no form fits (several
    inputs). The page hands it to static/tryit.js in a JSON block (the CSP allows no inline script)."""
    inputs = version.signature.inputs
    if len(inputs) != 1:
        return None
    spec = inputs[0]
    schema = (dataset or {}).get("schema") or {}
    profile = (dataset or {}).get("profile") or {}
    classes = [str(c) for c in schema.get("classes") or []] or classes_of(version.metrics)
    base: dict[str, Any] = {
        "input": spec.name,
        "datatype": spec.datatype,
        "shape": list(spec.shape),
        "outputs": [t.name for t in version.signature.outputs],
        "classes": classes,
    }
    if spec.datatype == "BYTES":
        return {**base, "kind": "text"}
    if len(spec.shape) == 4:
        channels = spec.shape[1] if spec.shape[1] > 0 else 1
        image = schema.get("image") or {}
        height = spec.shape[2] if spec.shape[2] > 0 else int(image.get("height") or 28)
        width = spec.shape[3] if spec.shape[3] > 0 else int(image.get("width") or 28)
        scale = float(version.params.get("input_scale") or 1.0)
        peak = max((float(c.get("max", 0.0)) for c in profile.get("channels") or []), default=0.0)
        # The model is fed what it was trained on: the dataset's pixel range, or 0-255 scaled by input_scale.
        high = peak if peak > 0 else (16.0 if version.dataset == "sklearn:digits" else 255.0) * scale
        return {**base, "kind": "image", "channels": channels, "height": height, "width": width, "high": high}
    width = spec.shape[1] if len(spec.shape) == 2 and spec.shape[1] > 0 else 1
    names = [f["name"] for f in schema.get("features") or [] if f.get("kind") == "numeric"]
    if len(names) != width:
        names = [f"x{i}" for i in range(width)]
    means = [round(float((profile.get("features") or {}).get(n, {}).get("mean", 0.0)), 4) for n in names]
    return {**base, "kind": "tabular", "features": names, "defaults": means}
