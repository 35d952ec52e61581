"""Data drift between a reference (the training data) and a current window (logged inputs): pure functions.

The test for each feature is picked the way Evidently picks it by default, so its results read the same:

- numeric features with more than 5 distinct reference values: the two-sample Kolmogorov-Smirnov test
  (drift when p < 0.05) if the reference has at most 1,000 rows, the Wasserstein distance normed by the
  reference's standard deviation (drift when > 0.1) above that;
- categorical features (and numeric ones with at most 5 distinct values): the chi-squared test of
  homogeneity (p < 0.05) up to 1,000 reference rows, the Jensen-Shannon distance (> 0.1) above that;
- the population stability index (PSI) is reported for every numeric feature, as information only;
- the dataset has drifted when at least half of its features have.

The statistics come from scipy (imported when first needed: the server pays for it only when drift is
asked for); nothing here writes a test scipy has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from stratus.types import Array

#: Evidently's defaults.
SMALL_REFERENCE_ROWS = 1000
P_VALUE_THRESHOLD = 0.05
DISTANCE_THRESHOLD = 0.1
DATASET_DRIFT_SHARE = 0.5
#: A numeric feature with at most this many distinct reference values is tested as categorical.
CATEGORICAL_MAX_DISTINCT = 5
PSI_BINS = 10
#: Floor for an empty PSI bin, so its logarithm stays finite (the usual convention).
PSI_EPSILON = 1e-4

Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    kind: Kind
    test: str  # ks | wasserstein | chisquare | jensenshannon
    #: A p-value for ks and chisquare (drift when below the threshold), a distance otherwise (when above).
    score: float
    threshold: float
    drifted: bool
    reference_rows: int
    current_rows: int
    psi: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftReport:
    features: list[FeatureDrift]
    prediction: FeatureDrift | None = None
    share_threshold: float = DATASET_DRIFT_SHARE
    skipped: list[str] = field(default_factory=list)  # features with no values on one side

    @property
    def drifted(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    @property
    def share(self) -> float:
        return len(self.drifted) / len(self.features) if self.features else 0.0

    @property
    def dataset_drift(self) -> bool:
        return bool(self.features) and self.share >= self.share_threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_drift": self.dataset_drift,
            "drift_share": self.share,
            "drifted_features": len(self.drifted),
            "features_tested": len(self.features),
            "share_threshold": self.share_threshold,
            "drifted": self.drifted,
            "features": [f.to_dict() for f in self.features],
            "prediction": self.prediction.to_dict() if self.prediction is not None else None,
            "skipped": self.skipped,
        }


def _finite(values: Array) -> Array:
    column = np.asarray(values, dtype=np.float64).ravel()
    return column[np.isfinite(column)]


def psi(reference: Array, current: Array, bins: int = PSI_BINS) -> float:
    """Population stability index over the reference's quantile bins: sum((c - r) * ln(c / r)), which is
    the symmetric Kullback-Leibler divergence, computed with scipy's relative entropy."""
    from scipy.special import rel_entr

    ref, cur = _finite(reference), _finite(current)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:  # a constant reference: one bin for its value, one for anything else
        r = np.array([1.0, 0.0])
        c = np.array([np.mean(cur == ref[0]), np.mean(cur != ref[0])])
    else:
        # Open outer bins, so current values beyond the reference's range are counted, not dropped.
        inner = edges[1:-1]
        r = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=inner.size + 1) / ref.size
        c = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=inner.size + 1) / cur.size
    r, c = np.maximum(r, PSI_EPSILON), np.maximum(c, PSI_EPSILON)
    return float(np.sum(rel_entr(c, r) + rel_entr(r, c)))


def _categorical_counts(reference: Array, current: Array) -> tuple[Array, Array]:
    ref = np.asarray(reference).astype(str).ravel()
    cur = np.asarray(current).astype(str).ravel()
    categories = np.union1d(ref, cur)
    ref_counts = np.array([np.count_nonzero(ref == c) for c in categories], dtype=np.float64)
    cur_counts = np.array([np.count_nonzero(cur == c) for c in categories], dtype=np.float64)
    return ref_counts, cur_counts


def categorical_drift(name: str, reference: Array, current: Array, reference_rows: int | None = None) -> FeatureDrift:
    """Chi-squared test of homogeneity (small reference) or Jensen-Shannon distance (large reference)."""
    ref_counts, cur_counts = _categorical_counts(reference, current)
    rows = reference_rows if reference_rows is not None else int(ref_counts.sum())
    current_rows = int(cur_counts.sum())
    if rows <= SMALL_REFERENCE_ROWS:
        from scipy.stats import chi2_contingency

        # One category on both sides: nothing can differ.
        p_value = 1.0 if ref_counts.size < 2 else float(chi2_contingency(np.stack([ref_counts, cur_counts])).pvalue)
        drifted = p_value < P_VALUE_THRESHOLD
        return FeatureDrift(name, "categorical", "chisquare", p_value, P_VALUE_THRESHOLD, drifted, rows, current_rows)
    from scipy.spatial.distance import jensenshannon

    distance = float(jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()))
    return FeatureDrift(
        name,
        "categorical",
        "jensenshannon",
        distance,
        DISTANCE_THRESHOLD,
        distance > DISTANCE_THRESHOLD,
        rows,
        current_rows,
    )


def numeric_drift(name: str, reference: Array, current: Array, reference_rows: int | None = None) -> FeatureDrift:
    """KS (small reference) or normed Wasserstein (large reference), with PSI alongside.

    ``reference_rows`` is the size of the data the reference stands for, when ``reference`` is a sample of
    it: the choice of test follows the data's size, as it would with the whole of it.
    """
    ref, cur = _finite(reference), _finite(current)
    rows = reference_rows if reference_rows is not None else int(ref.size)
    if np.unique(ref).size <= CATEGORICAL_MAX_DISTINCT:
        result = categorical_drift(name, ref, cur, rows)
        return FeatureDrift(**{**result.to_dict(), "psi": psi(ref, cur)})
    if rows <= SMALL_REFERENCE_ROWS:
        from scipy.stats import ks_2samp

        p_value = float(ks_2samp(ref, cur).pvalue)
        return FeatureDrift(
            name, "numeric", "ks", p_value, P_VALUE_THRESHOLD, p_value < P_VALUE_THRESHOLD, rows, int(cur.size),
            psi(ref, cur),
        )  # fmt: skip
    from scipy.stats import wasserstein_distance

    # Normed by the reference's spread so one threshold fits every unit; Evidently floors it at 0.001.
    distance = float(wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))
    return FeatureDrift(
        name, "numeric", "wasserstein", distance, DISTANCE_THRESHOLD, distance > DISTANCE_THRESHOLD, rows,
        int(cur.size), psi(ref, cur),
    )  # fmt: skip


def feature_drift(
    name: str, kind: str, reference: Array, current: Array, reference_rows: int | None = None
) -> FeatureDrift:
    if kind == "categorical":
        return categorical_drift(name, reference, current, reference_rows)
    return numeric_drift(name, reference, current, reference_rows)


def _present(kind: str, values: Array) -> int:
    if kind == "categorical":
        return int(np.asarray(values).size)
    return int(_finite(values).size)


def detect(
    reference: Mapping[str, tuple[str, Array]],
    current: Mapping[str, Array],
    *,
    reference_rows: int | None = None,
    prediction: tuple[str, Array, Array] | None = None,
) -> DriftReport:
    """Test every feature of ``reference`` (name -> (kind, values)) against the same feature in ``current``.

    ``prediction`` is (kind, evaluation-time outputs, current outputs): prediction drift, reported on its
    own and not counted in the dataset's share. A feature with no values on either side is skipped.
    """
    results, skipped = [], []
    for name, (kind, ref_values) in reference.items():
        cur_values = current.get(name)
        if cur_values is None or _present(kind, ref_values) == 0 or _present(kind, cur_values) == 0:
            skipped.append(name)
            continue
        results.append(feature_drift(name, kind, ref_values, cur_values, reference_rows))
    predicted = None
    if prediction is not None:
        kind, ref_out, cur_out = prediction
        if _present(kind, ref_out) and _present(kind, cur_out):
            predicted = feature_drift("prediction", kind, ref_out, cur_out)
    return DriftReport(results, predicted, skipped=skipped)
