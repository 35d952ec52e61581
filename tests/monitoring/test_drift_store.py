"""The drift time series and the attached reference file, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from onnx_factory import affine_model
from stratus.monitoring.drift_store import DriftHistory, DriftReportRow
from stratus.registry import RegistryService
from stratus.security.encryption import Keyring
from stratus.store import ArtifactStore, Database
from stratus.store.tables import utcnow


@pytest.fixture
def registry(tmp_path: Path, database_url: str) -> Iterator[RegistryService]:
    db = Database(database_url)
    db.migrate()
    yield RegistryService(db, ArtifactStore(tmp_path / "artifacts", Keyring.generate()))
    db.dispose()


def report(model: str, version: int, share: float, endpoint: str | None = None) -> dict[str, Any]:
    feature = {"name": "x", "test": "ks", "score": 0.01, "drifted": share > 0, "psi": 0.3}
    return {
        "model": model,
        "version": version,
        "endpoint": endpoint,
        "window": {"rows": 50},
        "drift_share": share,
        "dataset_drift": share >= 0.5,
        "features": [feature],
        "prediction": None,
    }


def test_reports_are_a_time_series_per_model_version_and_endpoint(registry: RegistryService) -> None:
    history = DriftHistory(registry.db, retention_days=30)
    project = registry.projects.current_id()
    history.add(project, report("a", 1, 0.0))
    history.add(project, report("a", 2, 0.5))
    history.add(project, report("a", 2, 1.0, endpoint="front"))
    history.add(project, report("b", 1, 0.25))
    assert [p["drift_share"] for p in history.series(project, model="a")] == [0.0, 0.5, 1.0]
    assert [p["drift_share"] for p in history.series(project, model="a", version=2)] == [0.5, 1.0]
    [front] = history.series(project, endpoint="front")
    assert (front["endpoint"], front["dataset_drift"], front["features"]) == (
        "front",
        True,
        {"x": ["ks", 0.01, True, 0.3]},
    )
    assert [p["drift_share"] for p in history.series(project, model="a", limit=2)] == [0.5, 1.0]  # the newest
    assert history.series(project + 1000, model="a") == []  # another project's: nothing


def test_retention_deletes_old_reports_when_a_new_one_is_written(registry: RegistryService) -> None:
    history = DriftHistory(registry.db, retention_days=1)
    project = registry.projects.current_id()
    with registry.db.write() as s:
        s.add(
            DriftReportRow(
                at=utcnow() - timedelta(days=2),
                project_id=project,
                model="a",
                version=1,
                endpoint="",
                window_rows=50,
                drift_share=0.0,
                dataset_drift=False,
                features={},
            )
        )
    assert len(history.series(project, model="a")) == 1
    history.add(project, report("a", 1, 0.5))
    assert [p["drift_share"] for p in history.series(project, model="a")] == [0.5]


def test_a_reference_file_is_attached_replaced_and_dropped_with_its_version(registry: RegistryService) -> None:
    registry.register_onnx("affine", affine_model())
    first = registry.attach_file("affine", 1, "drift-reference.npz", b"first reference")
    assert registry.read_file(first, "drift-reference.npz") == b"first reference"
    second = registry.attach_file("affine", 1, "drift-reference.npz", b"second reference")
    assert registry.read_file(second, "drift-reference.npz") == b"second reference"
    digests = set(registry.artifacts.digests())
    assert first.files["drift-reference.npz"] not in digests and second.files["drift-reference.npz"] in digests
    registry.delete_version("affine", 1)
    assert second.files["drift-reference.npz"] not in set(registry.artifacts.digests())
