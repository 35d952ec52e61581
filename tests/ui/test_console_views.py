"""What the resource pages compute, without a browser: the comparison of versions, the lineage graph, the try-it
form's description and the explain panel's, the drift series, paging, and the registry's page of models (never
every model)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from stratus.platform import Platform
from stratus.registry.records import VersionInfo
from stratus.settings import Settings
from stratus.store.tables import Model
from stratus.types import Signature, TensorSpec
from stratus.ui.pages import svg, views
from stratus.ui.pages.common import explain_panel
from stratus.ui.pages.endpoints import drift


def version(number: int, **changes: Any) -> VersionInfo:
    fields: dict[str, Any] = {
        "id": number,
        "model": "m",
        "version": number,
        "digest": "d" * 64,
        "size_bytes": 1000,
        "format": "onnx",
        "signature": Signature((TensorSpec("input", "FP32", (-1, 1, 8, 8)),), (TensorSpec("label", "INT64", (-1,)),)),
        "metrics": {
            "test_accuracy": 0.9,
            "per_class": {"0": {"precision": 1.0, "recall": 0.5, "f1": 0.6, "support": 2}},
        },
        "params": {"job_id": "a" * 32, "epochs": 5},
        "config": {},
        "parent_version": None,
        "dataset": "digits@" + "e" * 64,
        "source": "trainer:cnn",
        "description": "",
        "status": "active",
        "health": "healthy",
        "health_reason": "",
        "created_at": datetime(2026, 12, 2),
    }
    fields.update(changes)
    return VersionInfo(**fields)


def test_a_comparison_can_show_only_what_differs() -> None:
    one = version(1)
    two = version(2, size_bytes=400, metrics={"test_accuracy": 0.89}, params={"job_id": "b" * 32, "epochs": 5})
    every = views.compare([one, two], only_differences=False)
    differing = views.compare([one, two], only_differences=True)
    assert {name for name, _, _ in differing} == {"size_bytes", "metrics.test_accuracy", "params.job_id"}
    assert all(differs for _, _, differs in differing)
    assert ("params.epochs", ["5", "5"], False) in every
    assert not any(name.startswith("metrics.per_class") for name, _, _ in every)  # drawn, not listed


def test_the_lineage_runs_from_the_dataset_through_the_jobs_to_the_variants() -> None:
    parent = version(1)
    variant = version(
        2, parent_version=1, params={"job_id": "c" * 32, "compression_method": "fp16"}, source="compress:fp16"
    )
    nodes, edges = views.lineage("m", [variant, parent], "/ui")
    kinds = {n.key: n.kind for n in nodes}
    train, compress = "j" + "a" * 32, "j" + "c" * 32
    assert kinds == {"ddigits": "dataset", train: "job", "v1": "version", compress: "compression", "v2": "variant"}
    assert edges == [("ddigits", train), (train, "v1"), ("v1", compress), (compress, "v2")]
    drawn = svg.lineage(nodes, edges, "Lineage of m")
    assert drawn.count("<a href=") == 5 and 'href="/ui/compression/' + "c" * 32 in drawn
    assert drawn.count("<line ") == 4


def test_the_try_it_form_follows_the_signature_and_the_dataset() -> None:
    dataset = {
        "schema": {"classes": ["zero", "one"], "image": {"channels": 1, "height": 8, "width": 8}},
        "profile": {"channels": [{"max": 16.0}]},
    }
    image = views.tryit_spec(version(1), dataset)
    assert image is not None
    assert (image["kind"], image["height"], image["width"], image["high"]) == ("image", 8, 8, 16.0)
    assert image["classes"] == ["zero", "one"]
    text = views.tryit_spec(
        version(2, signature=Signature((TensorSpec("text", "BYTES", (-1,)),), (TensorSpec("e", "FP32", (-1, 3)),))),
        None,
    )
    assert text is not None and text["kind"] == "text"
    tabular_sig = Signature((TensorSpec("input", "FP32", (-1, 2)),), (TensorSpec("label", "INT64", (-1,)),))
    tabular = views.tryit_spec(
        version(3, signature=tabular_sig),
        {
            "schema": {"features": [{"name": "a", "kind": "numeric"}, {"name": "b", "kind": "numeric"}]},
            "profile": {"features": {"a": {"mean": 1.5}, "b": {"mean": -2.0}}},
        },
    )
    assert tabular is not None and tabular["features"] == ["a", "b"] and tabular["defaults"] == [1.5, -2.0]
    two_inputs = Signature((TensorSpec("a", "FP32", (-1, 1)), TensorSpec("b", "FP32", (-1, 1))), ())
    assert views.tryit_spec(version(4, signature=two_inputs), None) is None


def test_the_explain_panel_takes_the_try_it_fields_where_the_service_explains() -> None:
    """The version page's explain panel: the try-it form's fields, posted to the explain route; none for a format
    the explanation service refuses, or a pipeline that is no text model (a 400 is all it could ever show)."""
    onnx = version(1)
    panel = explain_panel(views.tryit_spec(onnx, None), onnx, "/v2/models/m/versions/1/explain")
    assert panel is not None and (panel["kind"], panel["url"]) == ("image", "/v2/models/m/versions/1/explain")
    text_sig = Signature((TensorSpec("text", "BYTES", (-1,)),), (TensorSpec("logits", "FP32", (-1, 2)),))
    text = version(2, format="pipeline", signature=text_sig)
    assert explain_panel(views.tryit_spec(text, None), text, "/x")["kind"] == "text"  # type: ignore[index]
    tabular_pipeline = version(3, format="pipeline")
    assert explain_panel(views.tryit_spec(tabular_pipeline, None), tabular_pipeline, "/x") is None
    other = version(4, format="ensemble")
    assert explain_panel(views.tryit_spec(other, None), other, "/x") is None
    assert explain_panel(None, onnx, "/x") is None


def test_drift_per_feature_over_time_puts_drifted_features_first() -> None:
    points = [
        {"at": "2026-12-02T06:00:00Z", "features": {"x": ["ks", 0.5, False, 0.01], "y": ["ks", 0.2, False, 0.02]}},
        {"at": "2026-12-02T06:05:00Z", "features": {"x": ["ks", 0.001, True, 0.4], "y": ["ks", 0.3, False, 0.03]}},
    ]
    found = drift([{**p, "drift_share": 0.5, "dataset_drift": False, "window_rows": 100} for p in points])
    assert found is not None
    assert list(found["chart"]["series"]) == ["x", "y"]
    assert found["chart"]["series"]["x"] == [0.01, 0.4]
    assert found["chart"]["x"][1] - found["chart"]["x"][0] == 300
    assert [row["feature"] for row in found["table"]] == ["x", "y"] and found["table"][0]["drifted"] is True
    assert drift([]) is None


def test_the_model_list_reads_one_page(tmp_path: Path) -> None:
    platform = Platform(Settings(home=tmp_path, samples=False))
    try:
        platform.db.migrate()
        project = platform.registry.projects.current_id()
        with platform.db.write() as s:  # one transaction: the page is what is tested, not 60 registrations
            s.add_all([Model(project_id=project, name=f"model-{i:03d}") for i in range(60)])
        page, total = platform.registry.page_models(50, 50)
        assert total == 60 and [m.name for m in page] == [f"model-{i:03d}" for i in range(50, 60)]
        found, count = platform.registry.page_models(0, 50, "-05")
        assert count == 10 and found[0].name == "model-050"
        paging = views.Paging(views.page_number("2"), 50, total)
        assert (paging.offset, paging.pages, paging.previous, paging.next) == (50, 2, 1, None)
        assert views.page_number("x") == views.page_number("0") == 1
    finally:
        platform.close()
