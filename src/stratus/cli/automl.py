"""`stratus automl ...` and `stratus leaderboard JOB`: an AutoML job and its trials as a table."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stratus.cli.connection import client as _client
from stratus.cli.output import console, print_table, reported_errors, show
from stratus.cli.training import JsonOption, UrlOption, follow_job

LEADERBOARD_ROWS = 20


def _number(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()) or "(defaults)"


def render_leaderboard(board: dict[str, Any], limit: int = LEADERBOARD_ROWS) -> None:
    summary = board.get("summary") or {}
    states = summary.get("states", {})
    print_table(
        f"AutoML job {board['job']} ({board['state']}): {board['metric']}, budget {board['budget_s']:g} s, "
        f"{len(board['rows'])} trials ({states.get('complete', '?')} complete, {states.get('pruned', '?')} pruned, "
        f"{states.get('failed', '?')} failed)",
        ["#", "family", "params", "state", "CV mean", "CV std", "folds", "confirm", "fit s", "size KB", "latency ms"],
        [
            (
                row["trial"],
                row["family"],
                _params(row["params"]),
                row["state"] if not row.get("error") else f"{row['state']}: {row['error'][:40]}",
                _number(row.get("cv_mean")),
                _number(row.get("cv_std")),
                row.get("folds"),
                _number(row.get("confirm_mean")),  # its mean on the second fold split, when it was confirmed
                _number(row.get("fit_s"), ".3f"),
                _number(None if row.get("size_bytes") is None else row["size_bytes"] / 1024, ".1f"),
                _number(row.get("latency_ms"), ".3f"),
            )
            for row in board["rows"][:limit]
        ],
    )
    result = board.get("result") or {}
    if "test_score" in result:
        console.print(
            f"best: trial {result['trial']} ({result['family']}), CV {result['cv_mean']:.4f} ± {result['cv_std']:.4f}, "
            f"test {board['metric']} {result['test_score']:.4f}; registered as version {board['version']}",
            highlight=False,
        )
    if "ensemble" in result:
        ensemble = result["ensemble"]
        console.print(
            f"ensemble of {len(ensemble['members'])} ({ensemble['combine']}): test {ensemble['test_score']:.4f}, "
            f"version {ensemble['version']}" + (" (recommended)" if ensemble.get("recommended") else ""),
            highlight=False,
        )


def automl(
    dataset: Annotated[str, typer.Option(help="Dataset name.")],
    metric: Annotated[str, typer.Option(help="f1_macro, accuracy, roc_auc (classification); rmse, r2 (regression).")],
    budget: Annotated[str, typer.Option(help="Wall-clock limit, refit included: 300, 90s, 5m, 1h.")],
    name: Annotated[str | None, typer.Option(help="Registered model name (default DATASET-automl).")] = None,
    family: Annotated[
        list[str] | None, typer.Option("--family", help="Search only this trainer family; repeatable.")
    ] = None,
    folds: Annotated[int, typer.Option(help="Cross-validation folds on the training split.")] = 5,
    ensemble: Annotated[int, typer.Option(help="Also register the top-K as an averaging ensemble (0: off).")] = 0,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job, then print its leaderboard.")] = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search the trainer families that fit a dataset, and their hyperparameters, within a time budget; the
    best model is refit, checked and registered as a new version."""
    with reported_errors(), _client(url) as client:
        job = client.automl(
            dataset,
            metric=metric,
            budget=budget,
            name=name,
            families=family,
            folds=folds,
            ensemble=ensemble,
            wait=False,
        )
        follow_job(
            job,
            wait=wait,
            timeout=int(job.data["timeout_s"]),
            as_json=as_json,
            render=lambda _: render_leaderboard(client.leaderboard(job.id)),
        )


def leaderboard(
    job_id: Annotated[str, typer.Argument(help="An AutoML job's id.")],
    limit: Annotated[int, typer.Option(help="Rows to print.")] = LEADERBOARD_ROWS,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """An AutoML job's trials, best first (as the search goes, and final once it ends)."""
    with reported_errors(), _client(url) as client:
        show(client.leaderboard(job_id), as_json, lambda board: render_leaderboard(board, limit))
