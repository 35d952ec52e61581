"""An AutoML request: the dataset, the metric, the time budget; which trainer families fit the dataset, and
which metrics fit its task. Checked at submit, so a request that cannot run is a 400, never a failed job."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator

from stratus.errors import InvalidInput
from stratus.registry.names import NAME_PATTERN
from stratus.training.params import SKLEARN_MODELS

Metric = Literal["f1_macro", "accuracy", "roc_auc", "rmse", "r2"]
CLASSIFICATION_METRICS = ("f1_macro", "accuracy", "roc_auc")
REGRESSION_METRICS = ("rmse", "r2")
#: Metrics a lower value of is better (the study minimises them).
LOWER_IS_BETTER = ("rmse",)
MIN_BUDGET_S = 10.0
#: The leaderboard a job keeps with its version (and in the job folder while it runs).
LEADERBOARD_FILE = "automl-leaderboard.json"
#: Trainer families AutoML searches, in the order their default configurations are tried first.
FAMILIES = ("logistic_regression", "linear_regression", "svm", "random_forest", "decision_tree", "mlp", "cnn")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """``300``, ``"300"``, ``"90s"``, ``"5m"``, ``"1.5h"`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as 90s, 5m or 1h")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("a duration is a finite number of seconds")
        return float(value)
    if isinstance(value, str):
        found = _DURATION.match(value)
        if found:
            return float(found.group(1)) * _UNIT_SECONDS[found.group(2) or "s"]
    raise ValueError(f"a duration is a number of seconds or a string such as 90s, 5m or 1h, not {value!r}")


class AutoMLRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(pattern=NAME_PATTERN, max_length=64)
    metric: Metric
    budget: Annotated[
        float,
        WithJsonSchema(
            {
                "anyOf": [{"type": "number"}, {"type": "string", "pattern": _DURATION.pattern}],
                "description": "wall-clock limit of the whole job, refit included: seconds, or 90s, 5m, 1h",
            }
        ),
    ]
    name: str | None = Field(
        default=None, pattern=NAME_PATTERN, max_length=64, description="registered model name; default: DATASET-automl"
    )
    families: list[str] | None = Field(
        default=None, max_length=len(FAMILIES), description="search only these trainer families (default: all that fit)"
    )
    folds: int = Field(default=5, ge=2, le=10, description="cross-validation folds on the training split")
    ensemble: int = Field(
        default=0, ge=0, le=5, description="also register the top-k as an averaging ensemble (0: off)"
    )
    test_split: float = Field(default=0.25, gt=0.0, lt=0.9)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    trial_memory_mb: int | None = Field(
        default=None, ge=64, le=1_048_576, description="address-space limit of each trial's process (default: server's)"
    )

    @field_validator("budget", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("ensemble")
    @classmethod
    def _members(cls, value: int) -> int:
        if value == 1:
            raise ValueError("an ensemble needs at least 2 models (0 turns it off)")
        return value

    @field_validator("families")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            unknown = sorted(set(value) - set(FAMILIES))
            if unknown:
                raise ValueError(f"unknown families {unknown}; AutoML searches {', '.join(FAMILIES)}")
            if not value:
                raise ValueError("name at least one family, or leave families unset")
        return value


def parse_request(raw: dict[str, Any], *, max_budget_s: float) -> AutoMLRequest:
    try:
        request = AutoMLRequest.model_validate(raw)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"invalid AutoML request: {detail}") from None
    if request.budget < MIN_BUDGET_S:
        raise InvalidInput(
            f"budget {request.budget:g} s is too short: an AutoML job needs at least {MIN_BUDGET_S:g} s "
            "(cross-validation, then the refit and its checks)"
        )
    if request.budget > max_budget_s:
        raise InvalidInput(
            f"budget {request.budget:g} s is over this server's limit of {max_budget_s:g} s "
            "(STRATUS_AUTOML_MAX_BUDGET_S)"
        )
    return request


def families_for(dataset: dict[str, Any]) -> list[str]:
    """The trainer families that can train on this dataset, as the training path's own checks decide."""
    task = dataset["task"]
    image = "image" in dataset["schema"]
    kinds = [f["kind"] for f in dataset["schema"]["features"]]
    if "text" in kinds:
        raise InvalidInput(
            f"dataset {dataset['name']!r} has a free-text column: AutoML searches tabular and image datasets; "
            "train text with the text_classifier trainer"
        )
    if task not in ("classification", "regression"):
        raise InvalidInput(f"dataset {dataset['name']!r} has no target; AutoML needs one to score models")
    if image:
        return ["mlp", "cnn"]
    found = [f for f in FAMILIES if f in SKLEARN_MODELS or f == "mlp"]
    drop = "linear_regression" if task == "classification" else "logistic_regression"
    return [f for f in found if f != drop]


def check_fits(request: AutoMLRequest, dataset: dict[str, Any]) -> list[str]:
    """The families to search, or a clear 400: a metric of the other task, families that cannot train here."""
    task = dataset["task"]
    fitting = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if task in ("classification", "regression") and request.metric not in fitting:
        raise InvalidInput(
            f"metric {request.metric} does not fit dataset {dataset['name']!r}, a {task} task: use one of "
            f"{', '.join(fitting)}"
        )
    families = families_for(dataset)
    if request.families is not None:
        unfit = [f for f in request.families if f not in families]
        if unfit:
            raise InvalidInput(f"families {unfit} cannot train on dataset {dataset['name']!r}; these can: {families}")
        families = [f for f in families if f in request.families]
    if request.metric == "roc_auc" and len(dataset["profile"].get("class_distribution", {})) > 50:
        raise InvalidInput("roc_auc is computed one class against the rest: at most 50 classes")
    return families
