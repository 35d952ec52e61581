"""The AutoML child: ``python -m stratus.automl.worker --job DIR --dataset - --threads N``.

It splits the dataset exactly as the training child does (same function, test split and seed), searches on
the training split only (search.py; each fold in a trial process), then refits the best configuration
through the training child itself (``python -m stratus.training.worker`` in DIR/refit: the same export to
ONNX, the same checks against the framework, the same evaluation files), and scores that ONNX on the test
split, the first time the test split is used. With ``ensemble`` k >= 2 the next configurations are refit
the same way and put together as a pipeline (ensemble.py). Like every job child it never touches the
metadata DB: the server registers what DIR holds.

The whole job keeps to the budget: the search stops early enough to leave the refit the time the best
configuration's folds took (scaled up to the whole training split) plus the training child's own start,
export and checks; a refit still running at the budget's end is killed.
"""

from __future__ import annotations

import json
import multiprocessing.forkserver
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from stratus.automl import ensemble
from stratus.automl.folds import Payload
from stratus.automl.params import LEADERBOARD_FILE, AutoMLRequest
from stratus.automl.refit import Refitter
from stratus.automl.scoring import better, score
from stratus.automl.search import Search, SearchConfig, TrialRecord
from stratus.automl.trials import fork_context
from stratus.training.datasets import ParsedDataset, parse
from stratus.training.params import SKLEARN_MODELS, TrainRequest
from stratus.training.worker import child_main, one_hot, report, split
from stratus.types import Array

#: The refit's cost besides fitting: parsing, export, ONNX checks against the framework, files (seconds on a
#: quiet machine; scaled by how much slower than usual this child started). Loading torch is not in it: the
#: refit process (refit.py) loads it, and warms it up, while the search runs.
REFIT_OVERHEAD_S = {"sklearn": 1.5, "torch": 6.0}
#: This child's start (interpreter, imports, dataset) on a quiet machine, the yardstick of that scale.
QUIET_STARTUP_S = 1.5
#: The child ends this long before the budget, for the server to register the result.
END_MARGIN_S = 1.0
MAX_LEADERBOARD_ROWS = 500
#: Loaded once by the trial processes' fork server (while this child parses the dataset), so a trial process
#: starts with them. Not torch: loading it takes seconds on a busy machine, and would hold back every trial
#: (the scikit-learn ones too); a trial process loads it at its first torch fold, a refit when it needs it.
PRELOAD = [
    "stratus.automl.folds",
    "stratus.training.worker",
    "sklearn.ensemble",
    "sklearn.svm",
    "sklearn.linear_model",
    "sklearn.tree",
    "skl2onnx",
    "onnxruntime",
]


def features(parsed: ParsedDataset, train_rows: Array) -> tuple[Array, list[list[str]]]:
    """The model's input matrix as the training child builds it: numeric columns, then one-hot categories
    seen in the training split."""
    X_numeric = parsed.X.astype(np.float32)
    if parsed.categorical is None:
        return X_numeric, []
    categories = [
        sorted({str(v) for v in parsed.categorical[train_rows, j]}) for j in range(parsed.categorical.shape[1])
    ]
    return np.concatenate([X_numeric, one_hot(parsed.categorical, categories)], axis=1), categories


def make_folds(y: Array, folds: int, seed: int, classify: bool) -> list[tuple[Array, Array]]:
    from sklearn.model_selection import KFold, StratifiedKFold

    rows = np.arange(len(y))
    if classify and np.bincount(y).min() >= folds:
        splitter: Any = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        return [(a, b) for a, b in splitter.split(rows, y)]
    return [(a, b) for a, b in KFold(n_splits=folds, shuffle=True, random_state=seed).split(rows)]


def refit_estimate(family: str, fit_s: list[float], folds: int, startup_s: float) -> float:
    """Seconds a refit needs on the whole training split: the fit its folds took, scaled to the whole split,
    then the export and checks, longer on a busy machine (as this child's own start was)."""
    fit = statistics.fmean(fit_s) if fit_s else 0.5
    framework = "sklearn" if family in SKLEARN_MODELS else "torch"
    slower = max(1.0, startup_s / QUIET_STARTUP_S)
    return slower * REFIT_OVERHEAD_S[framework] + 1.5 * fit * folds / max(1, folds - 1)


def first_of_each_family(trials: list[TrialRecord]) -> list[TrialRecord]:
    """The best trial of each family, in rank order: the candidates for the refit and an ensemble's members."""
    found: dict[str, TrialRecord] = {}
    for trial in trials:
        found.setdefault(trial.family, trial)
    return list(found.values())


def run(job_dir: Path, data: bytes, threads: int) -> None:
    spec = json.loads((job_dir / "request.json").read_text())
    startup_s = max(0.0, time.time() - spec["started_at"])
    request = AutoMLRequest.model_validate(spec["request"])
    # The budget counts from when the server started this job, not from when this interpreter got here.
    end = time.monotonic() + (spec["started_at"] + request.budget - time.time()) - END_MARGIN_S
    families: list[str] = spec["families"]
    context = fork_context(PRELOAD)
    multiprocessing.forkserver.ensure_running()  # loads the trainers' modules while the dataset is parsed
    refitter = Refitter(context, data, threads, families)
    try:
        _search_and_refit(job_dir, spec, request, families, refitter, data, threads, startup_s, end)
    finally:
        refitter.stop(kill=True)


def _search_and_refit(
    job_dir: Path,
    spec: dict[str, Any],
    request: AutoMLRequest,
    families: list[str],
    refitter: Refitter,
    data: bytes,
    threads: int,
    startup_s: float,
    end: float,
) -> None:
    dataset = spec["dataset"]
    options = dataset.get("options", {})
    parsed = parse(
        dataset["format"],
        data,
        target=dataset.get("target"),
        missing=options.get("missing", "error"),
        task=options.get("task"),
    )
    assert parsed.y is not None
    refitter.start()  # once the fork server is ready: it warms up for torch while the search runs
    classify = parsed.task == "classification"
    train_rows, test_rows, y_train, y_test = split(
        np.arange(parsed.rows), parsed.y, request.test_split, request.seed, classify
    )
    X, _ = features(parsed, train_rows)
    payload = Payload(
        X=X[train_rows],
        y=np.asarray(y_train),
        # The search's folds, then a second split's (another shuffle) for the confirmation stage.
        folds=make_folds(np.asarray(y_train), request.folds, request.seed, classify)
        + make_folds(np.asarray(y_train), request.folds, request.seed + 1, classify),
        split_folds=request.folds,
        task=parsed.task,
        classes=len(parsed.classes),
        image_shape=parsed.image_shape,
        metric=request.metric,
        seed=request.seed,
    )
    config = SearchConfig(
        families=families,
        metric=request.metric,
        folds=request.folds,
        seed=request.seed,
        processes=max(1, threads),
        memory_mb=int(spec["trial_memory_mb"]),
        trial_timeout_s=max(10.0, request.budget / 3),
        preload=PRELOAD,
    )
    searching = f"searching {', '.join(families)}: {request.metric}, {request.budget:g} s budget"
    report({"event": "log", "message": searching})
    search = Search(config, payload, report)
    members = max(1, request.ensemble)

    def estimate(trial: TrialRecord) -> float:
        return refit_estimate(trial.family, trial.fit_s, request.folds, startup_s)

    def stop_at() -> float:
        ranked = first_of_each_family(search.chosen())[:members]
        if ranked:
            return float(end - sum(estimate(t) for t in ranked))
        return float(end - min(refit_estimate(f, [], request.folds, startup_s) for f in families))

    search.run(stop_at)
    ranked = search.ranked()
    complete = search.chosen()  # the refit's order: confirmed on fresh folds first
    summary: dict[str, Any] = {
        "metric": request.metric,
        "budget_s": request.budget,
        "folds": request.folds,
        "families": families,
        "trials": len(search.trials),
        "states": {s: sum(1 for t in search.trials if t.state == s) for s in ("complete", "pruned", "failed")},
        "search_s": round(time.monotonic() - (end + END_MARGIN_S - request.budget), 2),
    }
    leaderboard: dict[str, Any] = {**summary, "rows": [t.row() for t in ranked[:MAX_LEADERBOARD_ROWS]]}
    (job_dir / LEADERBOARD_FILE).write_text(json.dumps(leaderboard))
    report({"event": "leaderboard", **summary, "best": complete[0].row() if complete else None})
    if not complete:
        raise RuntimeError(f"no trial completed within the budget ({summary['states']['failed']} failed)")
    base = {"dataset": dataset["name"], "params": {"test_split": request.test_split, "seed": request.seed}}
    refits: list[tuple[TrialRecord, Path]] = []
    for trial in complete:
        if len(refits) >= members or (refits and time.monotonic() + estimate(trial) > end):
            break
        if any(trial.family == done.family for done, _ in refits):
            continue  # an ensemble's members are each family's best: near-copies of one model add nothing
        left = end - time.monotonic()
        if not refits and estimate(trial) > left and any(estimate(t) <= left for t in complete if t is not trial):
            continue  # the time left (the machine got slower) fits another configuration's refit, not this one's
        folder = job_dir / ("refit" if not refits else f"member-{len(refits)}")
        error = refitter.refit(folder, dataset, base, trial, end)
        if error is None:
            refits.append((trial, folder))
        else:
            report({"event": "log", "message": f"refit of trial {trial.number} ({trial.family}) failed: {error}"})
            if time.monotonic() >= end:
                break
    if not refits:
        raise RuntimeError("no configuration could be refit within the budget")
    best, folder = refits[0]
    test_score = held_out_score(folder, parsed, X, test_rows, np.asarray(y_test), request.metric)
    result: dict[str, Any] = {
        "metric": request.metric,
        "test_score": test_score,
        "cv_mean": best.row()["cv_mean"],
        "cv_std": best.row()["cv_std"],
        "confirm_mean": best.row()["confirm_mean"],
        "confirmed": sum(1 for t in search.trials if t.confirm == "done"),
        "trial": best.number,
        "family": best.family,
        "params": best.params,
        "request": TrainRequest.model_validate(
            {"dataset": dataset["name"], "model": best.family, "params": {**base["params"], **best.params}}
        ).model_dump(),
        "trials": summary["trials"],
    }
    if len(refits) >= 2:
        made = ensemble.build(job_dir, refits, parsed, test_rows, np.asarray(y_test), request.metric)
        if made is not None:
            # Whether the ensemble beat its best member on the confirmation folds: the job's recommendation
            # between the two, made without the test split.
            kept = {m["trial"] for m in made["members"]}
            confirmed = ensemble.estimate([t for t, _ in refits if t.number in kept], payload, request.metric)
            if confirmed is not None:
                made["confirm"] = confirmed
                made["recommended"] = better(request.metric, confirmed["ensemble"], confirmed["single"])
        result["ensemble"] = made
    (job_dir / "automl.json").write_text(json.dumps(result))
    headline = {f"test_{request.metric}": test_score, f"cv_{request.metric}": result["cv_mean"]}
    report({"event": "done", "metrics": headline})


def served_outputs(folder: Path, parsed: ParsedDataset, X: Array, rows: Array) -> dict[str, Array]:
    """The refit ONNX model's outputs on ``rows``, fed as a client would (numeric and categorical inputs)."""
    import onnxruntime as ort

    session = ort.InferenceSession((folder / "model.onnx").read_bytes(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feeds: dict[str, Any]
    if "categorical" in names:
        assert parsed.categorical is not None
        feeds = {"categorical": parsed.categorical[rows].astype(str).astype(object)}
        if "numeric" in names:
            feeds["numeric"] = parsed.X.astype(np.float32)[rows]
    else:
        feeds = {names[0]: X[rows]}
    outputs = [o.name for o in session.get_outputs()]
    return dict(zip(outputs, session.run(outputs, feeds), strict=True))


def held_out_score(folder: Path, parsed: ParsedDataset, X: Array, rows: Array, y: Array, metric: str) -> float:
    outputs = served_outputs(folder, parsed, X, rows)
    if parsed.task == "classification":
        scores = outputs.get("probabilities", outputs.get("logits"))
        return score(metric, y, outputs["label"].ravel(), scores, len(parsed.classes))
    value = next(iter(outputs.values()))
    return score(metric, y, value.ravel(), None, 0)


def main() -> None:
    child_main(run)


if __name__ == "__main__":
    main()
