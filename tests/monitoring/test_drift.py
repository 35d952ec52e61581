"""Drift statistics on real data: breast_cancer (30 numeric features, 569 rows), split as the trainer splits it.

The reference is what a trained version keeps: its training split, as ``reference_of`` samples it. The
end-to-end check (logged requests of a trained model, the API) is tests/e2e/test_drift_live.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from stratus.monitoring.drift import categorical_drift, detect, numeric_drift, psi
from stratus.training import drift_reference
from stratus.training.datasets import builtin_npz, parse, reference_of, schema_of
from stratus.training.drift_reference import Layout, Reference, features_of, layout_for

SHIFTED = (3, 7)  # mean area, mean concave points


@pytest.fixture(scope="module")
def cancer() -> tuple[Reference, np.ndarray, np.ndarray, list[str]]:
    """The reference of a model trained with the trainer's defaults (test_split 0.25, seed 0, stratified)."""
    parsed = parse("npz", builtin_npz("breast_cancer"))
    assert parsed.y is not None
    train, test = train_test_split(np.arange(parsed.rows), test_size=0.25, random_state=0, stratify=parsed.y)
    layout = layout_for(schema_of(parsed), ["input"], ["label", "probabilities"])
    reference = reference_of(parsed, layout, train, source="training split", outputs=parsed.y[test])
    return Reference.from_bytes(reference.to_bytes()), parsed.X[train], parsed.X[test], parsed.feature_names


def window(layout: Layout, rows: np.ndarray) -> dict[str, np.ndarray]:
    return features_of(layout, {"input": rows.astype(np.float32)})


def test_the_reference_round_trips_and_holds_the_training_rows(cancer) -> None:  # type: ignore[no-untyped-def]
    reference, train, _, names = cancer
    assert reference.rows == len(train) == 426 and reference.source == "training split"
    assert list(reference.features) == names and reference.layout.output == "label"
    assert np.allclose(reference.features["mean area"], train[:, 3].astype(np.float32))
    assert reference.outputs is not None and reference.outputs.size == 143


def test_two_features_shifted_by_two_standard_deviations_are_the_two_flagged(cancer) -> None:  # type: ignore[no-untyped-def]
    """The window is the whole held-out split, which unshifted flags nothing (the test below)."""
    reference, train, test, names = cancer
    assert detect(reference.columns(), window(reference.layout, test), reference_rows=reference.rows).drifted == []
    rows = test.copy()
    rows[:, SHIFTED] += 2 * train[:, SHIFTED].std(axis=0)
    report = detect(reference.columns(), window(reference.layout, rows), reference_rows=reference.rows)
    assert report.drifted == [names[i] for i in SHIFTED]
    assert (len(report.features), report.share, report.dataset_drift) == (30, 2 / 30, False)
    flagged = {f.name: f for f in report.features if f.drifted}
    assert all(f.test == "ks" and f.score < 0.05 and f.psi is not None and f.psi > 0.2 for f in flagged.values())


def test_sixteen_shifted_features_drift_the_dataset(cancer) -> None:  # type: ignore[no-untyped-def]
    reference, train, test, names = cancer
    rows = test.copy()
    rows[:, :16] += 2 * train[:, :16].std(axis=0)
    report = detect(reference.columns(), window(reference.layout, rows), reference_rows=reference.rows)
    assert report.drifted == names[:16] and report.share == 16 / 30 and report.dataset_drift


def test_held_out_windows_flag_few_features_and_never_the_dataset(cancer) -> None:  # type: ignore[no-untyped-def]
    """20 windows of 50 rows drawn from the held-out split: the tests' own false-positive rate is 5%."""
    reference, _, test, _ = cancer
    rng = np.random.default_rng(2026)
    flagged, feature_windows = 0, 0
    for _ in range(20):
        rows = test[rng.choice(len(test), size=50, replace=False)]
        report = detect(reference.columns(), window(reference.layout, rows), reference_rows=reference.rows)
        assert not report.dataset_drift
        flagged += len(report.drifted)
        feature_windows += len(report.features)
    assert feature_windows == 600
    print(f"held-out windows: {flagged} of {feature_windows} feature-windows flagged ({flagged / 6:.1f}%)")
    assert flagged <= 0.08 * feature_windows


def test_large_references_use_the_normed_wasserstein_distance_and_categoricals_chi_squared() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(10, 2, 5000)
    same = numeric_drift("x", reference, rng.normal(10, 2, 300))
    moved = numeric_drift("x", reference, rng.normal(10.6, 2, 300))  # 0.3 sd: distance about 0.3
    assert (same.test, same.drifted, moved.test, moved.drifted) == ("wasserstein", False, "wasserstein", True)
    assert same.score < 0.1 < moved.score
    # A sample standing for a large dataset is tested as the dataset would be.
    assert numeric_drift("x", reference[:500], rng.normal(10, 2, 300), reference_rows=100_000).test == "wasserstein"
    colours = np.array(["red"] * 300 + ["blue"] * 200)
    assert not categorical_drift("c", colours, np.array(["red"] * 30 + ["blue"] * 20)).drifted
    flipped = categorical_drift("c", colours, np.array(["red"] * 10 + ["blue"] * 40))
    assert (flipped.test, flipped.drifted) == ("chisquare", True)
    large = categorical_drift("c", np.tile(colours, 4), np.array(["red"] * 10 + ["blue"] * 30 + ["green"] * 10))
    assert (large.test, large.drifted) == ("jensenshannon", True)
    # Few distinct values: a numeric flag is compared as categories.
    assert numeric_drift("flag", rng.integers(0, 2, 400).astype(float), np.ones(50)).test == "chisquare"


def test_psi_is_zero_for_the_same_sample_and_grows_with_the_shift() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(0, 1, 2000)
    assert psi(reference, reference) == pytest.approx(0.0, abs=1e-9)
    small, large = psi(reference, rng.normal(0.1, 1, 2000)), psi(reference, rng.normal(1.0, 1, 2000))
    assert small < 0.1 < 0.25 < large
    assert psi(np.full(10, 3.0), np.array([3.0, 4.0])) > 0  # a constant reference still compares


def test_image_and_text_features() -> None:
    images = np.random.default_rng(0).uniform(0, 16, size=(40, 1, 8, 8))
    layout = Layout("image", input="input", channels=1)
    columns = features_of(layout, {"input": images})
    assert set(columns) == {"channel0_mean", "channel0_std"} and columns["channel0_mean"].shape == (40,)
    assert np.allclose(columns["channel0_mean"], images.reshape(40, -1).mean(axis=1))
    text = Layout("text", input="text")
    training = np.array(["the cat sat", "the dog sat", "a cat ran"], dtype=object)
    own = features_of(text, {"text": training})
    assert own["token_count"].tolist() == [3, 3, 3]
    # Leave-one-out: "dog" and "ran", "a" appear in one text only.
    assert own["oov_rate"].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3])
    served = features_of(text, {"text": np.array([b"the zebra sat"], dtype=object)}, frozenset({"the", "sat"}))
    assert served["oov_rate"].tolist() == pytest.approx([1 / 3])


def test_layout_follows_the_trainers_input_names() -> None:
    csv = b"size,colour,label\n1,red,a\n2,blue,b\n3,red,a\n4,blue,b\n"
    parsed = parse("csv", csv, target="label")
    layout = layout_for(schema_of(parsed), ["numeric", "categorical"], ["label", "probabilities"])
    assert (layout.numeric_input, layout.numeric, layout.categorical_input, layout.categorical) == (
        "numeric",
        ["size"],
        "categorical",
        ["colour"],
    )
    reference = reference_of(parsed, layout, source="test")
    assert reference.columns()["colour"][1].tolist() == ["red", "blue", "red", "blue"]
    digits = parse("npz", builtin_npz("digits"))
    assert layout_for(schema_of(digits), ["input"], ["logits", "label"]).kind == "image"


def test_image_and_text_references_round_trip() -> None:
    digits = parse("npz", builtin_npz("digits"))
    layout = layout_for(schema_of(digits), ["input"], ["logits", "label"])
    image = Reference.from_bytes(reference_of(digits, layout, np.arange(1000), source="training split").to_bytes())
    assert (image.rows, sorted(image.columns())) == (1000, ["channel0_mean", "channel0_std"])
    assert image.columns()["channel0_mean"][1].shape == (1000,)
    lines = [f'"{w} review number {i}",{i % 2}' for i, w in enumerate(["good", "bad", "fine", "great"] * 15)]
    texts = parse("csv", ("text,label\n" + "\n".join(lines) + "\n").encode(), target="label")
    layout = layout_for(schema_of(texts), ["text"], ["label", "logits"])
    text = Reference.from_bytes(reference_of(texts, layout, source="training split").to_bytes())
    assert (text.layout.kind, sorted(text.columns())) == ("text", ["oov_rate", "token_count"])
    assert text.vocabulary is not None and {"good", "review", "number"} <= text.vocabulary
    served = features_of(
        text.layout, {"text": np.array([b"good review", b"unseen words here"], dtype=object)}, text.vocabulary
    )
    assert served["oov_rate"].tolist() == [0.0, 1.0]


def test_a_categorical_input_drifts_by_its_proportions() -> None:
    """Logged string tensors come back as bytes; the reference holds the training strings."""
    rng = np.random.default_rng(5)
    colours = rng.choice(["red", "green", "blue"], size=400, p=[0.5, 0.3, 0.2]).astype(object)
    sizes = rng.normal(10, 2, 400)
    layout = Layout("tabular", "numeric", ["size"], "categorical", ["colour"])
    reference = drift_reference.build(
        layout, {"numeric": sizes[:, None].astype(np.float32), "categorical": colours[:, None]}, rows=400, source="t"
    )

    def logged(p: list[float]) -> dict[str, np.ndarray]:
        values = rng.choice([b"red", b"green", b"blue"], size=120, p=p).astype(object)
        tensors = {"numeric": rng.normal(10, 2, (120, 1)).astype(np.float32), "categorical": values[:, None]}
        return features_of(layout, tensors)

    same = detect(reference.columns(), logged([0.5, 0.3, 0.2]), reference_rows=400)
    moved = detect(reference.columns(), logged([0.1, 0.2, 0.7]), reference_rows=400)
    assert same.drifted == [] and moved.drifted == ["colour"]
    colour = next(f for f in moved.features if f.name == "colour")
    assert (colour.kind, colour.test, colour.psi) == ("categorical", "chisquare", None)
