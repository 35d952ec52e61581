"""Drift as a service: a version's reference against a window of its logged inputs, for the caller's project.

The reference of a version (``drift-reference.npz``, a sealed version file) is, in order: its own (a
trained version gets one from its training child; an uploaded one replaces it); its parent's (a
compressed variant takes the inputs its parent took); or, for a version trained before references were
kept, one built on first use from its lineage dataset and attached, so old versions keep working. A
version with none of these (registered from outside) needs an uploaded reference dataset.

The window is the last N logged requests' inputs or those of the last T minutes (the inference log must
capture payloads). Each computed report is stored (the drift time series) and exported as gauges.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

from stratus import tenancy
from stratus.errors import Conflict, InvalidInput, NotFound
from stratus.monitoring.drift import detect
from stratus.monitoring.drift_store import DriftHistory
from stratus.monitoring.log import InferenceLog
from stratus.registry import RegistryService
from stratus.registry.records import VersionInfo
from stratus.training.drift_reference import REFERENCE_FILE, Reference, features_of, output_values
from stratus.types import Array

log = logging.getLogger(__name__)

MAX_WINDOW_ROWS = 100_000


@dataclass
class Window:
    """Logged requests of one version, as tensors: each input's rows concatenated."""

    requests: int = 0
    inputs: dict[str, list[Array]] = field(default_factory=dict)
    outputs: dict[str, list[Array]] = field(default_factory=dict)
    first: datetime | None = None
    last: datetime | None = None

    def add(self, at: datetime, inputs: Mapping[str, Array], outputs: Mapping[str, Array] | None) -> None:
        self.requests += 1
        self.first = at if self.first is None or at < self.first else self.first
        self.last = at if self.last is None or at > self.last else self.last
        for name, tensor in inputs.items():
            self.inputs.setdefault(name, []).append(np.asarray(tensor))
        for name, tensor in (outputs or {}).items():
            self.outputs.setdefault(name, []).append(np.asarray(tensor))

    @staticmethod
    def _joined(parts: dict[str, list[Array]]) -> dict[str, Array]:
        joined = {}
        for name, arrays in parts.items():
            try:
                joined[name] = np.concatenate([a if a.ndim else a[None] for a in arrays], axis=0)
            except ValueError:  # requests of different widths (a changed client): keep the common shape
                common = max({a.shape[1:] for a in arrays}, key=lambda s: sum(a.shape[1:] == s for a in arrays))
                joined[name] = np.concatenate([a for a in arrays if a.shape[1:] == common], axis=0)
        return joined

    def tensors(self) -> dict[str, Array]:
        return self._joined(self.inputs)

    def output_tensors(self) -> dict[str, Array]:
        return self._joined(self.outputs)


class WindowSource(Protocol):
    """The logged requests of ``model`` (of one version when given; through one endpoint when given), the
    newest ``last`` of them or those of the last ``minutes``, grouped by the version that served them."""

    def __call__(
        self, model: str | None, endpoint: str | None, version: int | None, last: int | None, minutes: float | None
    ) -> dict[tuple[str, int], Window]: ...


def log_windows(log: InferenceLog) -> WindowSource:
    """Windows read from the inference log: successful requests logged with their payloads, newest first,
    until ``last`` input rows are gathered (a request of a batch of 10 counts 10)."""

    def windows(
        model: str | None, endpoint: str | None, version: int | None, last: int | None, minutes: float | None
    ) -> dict[tuple[str, int], Window]:
        since = time.time() - minutes * 60 if minutes is not None else None
        project = tenancy.current_project()
        if endpoint is not None:
            records = log.records(project, endpoint=endpoint, version=version, start=since, status="ok")
        else:
            records = log.records(project, model=model, version=version, start=since, status="ok")
        found: dict[tuple[str, int], Window] = {}
        rows = 0
        for record in records:
            inputs = record.arrays("inputs")
            if not inputs:  # logged without payloads, or masked
                continue
            outputs = record.arrays("outputs")
            count = max(record.batch_size, 1)
            if last is not None and rows + count > last:  # the oldest request counted in part: exactly N rows
                keep = last - rows
                inputs = {k: v[:keep] if v.ndim else v for k, v in inputs.items()}
                outputs = {k: v[:keep] if v.ndim else v for k, v in outputs.items()}
                count = keep
            at = datetime.fromtimestamp(record.at, UTC).replace(tzinfo=None)
            found.setdefault((record.model, record.version), Window()).add(at, inputs, outputs)
            rows += count
            if last is not None and rows >= last:
                break
        return found

    return windows


class LineageReferences(Protocol):
    """A reference built from a version's lineage dataset (training's side), or None when it has none."""

    def __call__(self, version: VersionInfo) -> Reference | None: ...


class DriftMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["model", "version", "feature", "project"]
        self.feature = Gauge(
            "stratus_feature_drift",
            "1 when the feature drifted in the last computed window, else 0.",
            labels,
            registry=registry,
        )
        self.score = Gauge(
            "stratus_feature_drift_score",
            "The feature's drift score in the last window: a p-value (ks, chisquare) or a distance (wasserstein, "
            "jensenshannon); see the test label.",
            [*labels[:3], "test", "project"],
            registry=registry,
        )
        self.share = Gauge(
            "stratus_drift_share",
            "Share of the version's features that drifted in the last computed window (dataset drift at >= 0.5).",
            ["model", "version", "project"],
            registry=registry,
        )

    def publish(self, project: str, report: Mapping[str, Any]) -> None:
        model, version = report["model"], str(report["version"])
        self.share.labels(model, version, project).set(report["drift_share"])
        for item in [*report["features"], *([report["prediction"]] if report["prediction"] else [])]:
            self.feature.labels(model, version, item["name"], project).set(1.0 if item["drifted"] else 0.0)
            self.score.labels(model, version, item["name"], item["test"], project).set(item["score"])


class DriftService:
    def __init__(
        self,
        registry: RegistryService,
        history: DriftHistory,
        metrics: DriftMetrics,
        *,
        window_source: WindowSource | None,
        lineage: LineageReferences | None,
        endpoint_versions: Callable[[str], list[VersionInfo]] | None = None,
        default_window: int,
        min_rows: int,
    ) -> None:
        self.registry = registry
        self.history = history
        self.metrics = metrics
        self.window_source = window_source
        self.lineage = lineage
        self.endpoint_versions = endpoint_versions
        self.default_window = default_window
        self.min_rows = min_rows

    # -- references -----------------------------------------------------------------------------

    def reference(self, version: VersionInfo) -> Reference:
        if REFERENCE_FILE in version.files:
            return Reference.from_bytes(self.registry.read_file(version, REFERENCE_FILE))
        if version.parent_version is not None:
            parent = self._version_or_none(version.model, version.parent_version)
            if parent is not None and REFERENCE_FILE in parent.files:
                return Reference.from_bytes(self.registry.read_file(parent, REFERENCE_FILE))
        built = self.lineage(version) if self.lineage is not None else None
        if built is None:
            raise NotFound(
                f"version {version.version} of model {version.model!r} has no drift reference: it was not trained "
                "here; upload one (PUT /api/v1/models/NAME/versions/N/reference, `stratus drift-reference NAME N FILE`)"
            )
        # The lazy upgrade of a version trained before references were kept: built once, then kept.
        self.registry.attach_file(version.model, version.version, REFERENCE_FILE, built.to_bytes())
        log.info("built the drift reference of %s version %d from its dataset", version.model, version.version)
        return built

    def _version_or_none(self, model: str, version: int) -> VersionInfo | None:
        try:
            return self.registry.get_version(model, version)
        except NotFound:
            return None

    def attach_reference(self, name: str, version: int, reference: Reference) -> dict[str, Any]:
        self.registry.attach_file(name, version, REFERENCE_FILE, reference.to_bytes())
        return self.describe_reference(reference)

    @staticmethod
    def describe_reference(reference: Reference) -> dict[str, Any]:
        kinds = reference.layout.feature_kinds()
        return {
            "source": reference.source,
            "rows": reference.rows,
            "sampled_rows": int(next(iter(reference.features.values())).shape[0]) if reference.features else 0,
            "layout": reference.layout.kind,
            "features": [{"name": n, "kind": kinds[n]} for n in reference.features if n in kinds],
            "prediction": reference.outputs is not None and reference.layout.output is not None,
        }

    # -- reports --------------------------------------------------------------------------------

    def _window(
        self, model: str | None, endpoint: str | None, version: int | None, last: int | None, minutes: float | None
    ) -> dict[tuple[str, int], Window]:
        if last is not None and not 1 <= last <= MAX_WINDOW_ROWS:
            raise InvalidInput(f"last must be between 1 and {MAX_WINDOW_ROWS}")
        if minutes is not None and not 0 < minutes <= 60 * 24 * 30:
            raise InvalidInput("minutes must be above 0 and at most 30 days")
        if self.window_source is None:
            raise NotFound("the inference log is not available on this server, so there is no window to compare")
        if last is None:  # a time window is bounded too: at most MAX_WINDOW_ROWS rows are read
            last = self.default_window if minutes is None else MAX_WINDOW_ROWS
        return self.window_source(model, endpoint, version, last, minutes)

    def _report(self, version: VersionInfo, window: Window, endpoint: str | None) -> dict[str, Any]:
        reference = self.reference(version)
        base: dict[str, Any] = {
            "model": version.model,
            "version": version.version,
            "endpoint": endpoint,
            "reference": self.describe_reference(reference),
            "window": {
                "requests": window.requests,
                "rows": 0,
                "from": window.first.isoformat() + "Z" if window.first else None,
                "to": window.last.isoformat() + "Z" if window.last else None,
            },
        }
        try:
            current = features_of(reference.layout, window.tensors(), reference.vocabulary) if window.requests else {}
        except KeyError as exc:  # the reference was made for other inputs than the version is sent
            raise Conflict(f"the logged requests have no input {exc.args[0]!r}, which the reference needs") from None
        rows = int(next(iter(current.values())).shape[0]) if current else 0
        base["window"]["rows"] = rows
        if rows < self.min_rows:
            empty = detect({}, {})
            return {
                **base,
                **empty.to_dict(),
                "status": "insufficient_data",
                "message": f"{rows} logged row(s) in the window; drift needs at least {self.min_rows} (with "
                "payload capture on in the model's log settings)",
            }
        prediction = None
        layout = reference.layout
        logged_outputs = window.output_tensors()
        if reference.outputs is not None and layout.output is not None and layout.output in logged_outputs:
            prediction = (
                layout.output_kind,
                output_values(layout, reference.outputs),
                output_values(layout, logged_outputs[layout.output]),
            )
        report = detect(reference.columns(), current, reference_rows=reference.rows, prediction=prediction)
        result = {**base, **report.to_dict(), "status": "ok"}
        self.history.add(self.registry.projects.current_id(), result)
        self.metrics.publish(tenancy.current_project(), result)
        return result

    def model_report(
        self, name: str, ref: str | None = None, *, last: int | None = None, minutes: float | None = None
    ) -> dict[str, Any]:
        """Drift of one version of a model (the one ``ref`` names; by default the one served)."""
        version = self.registry.resolve(name, ref)
        windows = self._window(name, None, version.version, last, minutes)
        return self._report(version, windows.get((name, version.version), Window()), None)

    def endpoint_report(self, name: str, *, last: int | None = None, minutes: float | None = None) -> dict[str, Any]:
        """Drift of each version an endpoint routes to (its live revision), each against its own reference."""
        if self.endpoint_versions is None:
            raise NotFound(f"endpoint {name!r} does not exist")
        versions = self.endpoint_versions(name)
        windows = self._window(None, name, None, last, minutes)
        reports = [self._report(v, windows.get((v.model, v.version), Window()), name) for v in versions]
        return {"endpoint": name, "reports": reports}

    def series(
        self,
        *,
        model: str | None = None,
        endpoint: str | None = None,
        version: int | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        return self.history.series(
            self.registry.projects.current_id(),
            model=model,
            endpoint=endpoint,
            version=version,
            since=since,
            limit=limit,
        )

    def drift_share(self, project: str, target_kind: str, target: str, window_s: float, now: float) -> float | None:
        """The newest drift share stored for a model or endpoint of ``project`` in the ``window_s`` seconds
        before ``now`` (Unix seconds): what alert rules on drift share read. None when none was computed."""
        since = datetime.fromtimestamp(now - window_s, UTC).replace(tzinfo=None)
        with tenancy.acting_as(tenancy.Caller(project=project)):
            project_id = self.registry.projects.current_id()
        points = self.history.series(
            project_id,
            model=target if target_kind == "model" else None,
            endpoint=target if target_kind == "endpoint" else None,
            since=since,
            limit=1,
        )
        return float(points[-1]["drift_share"]) if points else None
