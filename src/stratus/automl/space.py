"""The search space: for each trainer family, the hyperparameters Optuna samples, as the training path's own
parameters (training/params.py TrainParams). A trial's configuration is therefore exactly what the refit
trains with: the best one goes through the usual training child, unchanged."""

from __future__ import annotations

from typing import Any

#: The searched torch configurations train on the whole training split (no validation carve-out: there is no
#: early stopping to feed), as their cross-validation folds measured them.
TORCH_COMMON: dict[str, Any] = {"validation_split": 0.0}


def defaults(family: str) -> dict[str, Any]:
    """The family's configuration with the platform's default parameters (TrainParams' own, validation split
    included): tried first, so the search never ends below what `stratus train` gives without tuning (on the
    cross-validation score)."""
    return {"family": family, "params": {}}


def suggest(trial: Any, family: str) -> dict[str, Any]:
    """Sample ``family``'s hyperparameters on an Optuna trial. Parameter names are prefixed with the family,
    so TPE models each family's space apart (a conditional space)."""

    def f(name: str) -> str:
        return f"{family}.{name}"

    params: dict[str, Any] = {}
    if family not in ("cnn", "random_forest", "decision_tree"):  # trees ignore scaling (sklearn_trainers.py)
        params["scaling"] = trial.suggest_categorical(f("scaling"), ["standard", "minmax"])
    if family == "logistic_regression":
        params["C"] = trial.suggest_float(f("C"), 1e-3, 1e3, log=True)
        params["max_iter"] = 2000
    elif family == "svm":
        params["C"] = trial.suggest_float(f("C"), 1e-2, 1e3, log=True)
        params["kernel"] = trial.suggest_categorical(f("kernel"), ["rbf", "linear", "poly"])
    elif family == "random_forest":
        params["n_estimators"] = trial.suggest_int(f("n_estimators"), 20, 400, log=True)
        params["max_depth"] = _depth(trial, f("max_depth"))
    elif family == "decision_tree":
        params["max_depth"] = _depth(trial, f("max_depth"))
    elif family in ("mlp", "cnn"):
        params.update(TORCH_COMMON)
        params["lr"] = trial.suggest_float(f("lr"), 1e-4, 3e-2, log=True)
        params["epochs"] = trial.suggest_int(f("epochs"), 10, 80, log=True)
        params["batch_size"] = trial.suggest_categorical(f("batch_size"), [16, 32, 64])
        params["weight_decay"] = trial.suggest_float(f("weight_decay"), 1e-6, 1e-2, log=True)
        if family == "mlp":
            layers = trial.suggest_int(f("layers"), 1, 2)
            width = trial.suggest_categorical(f("width"), [32, 64, 128, 256])
            params["hidden"] = [width] * layers
        else:
            first = trial.suggest_categorical(f("channels"), [8, 16, 32])
            params["channels"] = [first, first * 2]
    # linear_regression: scaling only.
    return {"family": family, "params": params}


def _depth(trial: Any, name: str) -> int | None:
    depth: int = trial.suggest_int(name, 2, 33, log=True)
    return None if depth == 33 else depth  # 33 stands for "no limit", the platform's default
