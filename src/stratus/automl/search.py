"""The search: an Optuna study (TPE sampler, successive-halving pruner) over trainer families and their
hyperparameters, scored by k-fold cross-validation on the training split, each fold in a trial process.

A trial's fold scores reach the study as intermediate values (the mean of its folds so far), so a poor
configuration is pruned after one fold, or three, instead of costing all k: successive halving over folds.
The default configuration of every family is tried first. The study is asked for a new trial only while
there is time for it before ``stop_at``; at ``stop_at`` the running folds are killed and their trials are
recorded as stopped by the budget.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

from stratus.automl.params import LOWER_IS_BETTER
from stratus.automl.scoring import better
from stratus.automl.space import defaults, suggest
from stratus.automl.trials import DEFAULT_FOLD, TrialProcess, fork_context

Report = Callable[[dict[str, Any]], None]


@dataclass
class TrialRecord:
    number: int
    family: str
    params: dict[str, Any]
    default: bool
    optuna_trial: Any = None
    state: str = "running"  # running, complete, pruned, failed
    scores: list[float] = field(default_factory=list)
    fit_s: list[float] = field(default_factory=list)
    size_bytes: int = 0
    latency_ms: float = 0.0
    error: str = ""
    pid: int = 0

    def row(self) -> dict[str, Any]:
        mean = statistics.fmean(self.scores) if self.scores else None
        return {
            "trial": self.number,
            "family": self.family,
            "params": self.params,
            "default": self.default,
            "state": self.state,
            "cv_mean": mean,
            "cv_std": statistics.pstdev(self.scores) if len(self.scores) > 1 else (0.0 if self.scores else None),
            "folds": len(self.scores),
            "fit_s": statistics.fmean(self.fit_s) if self.fit_s else None,
            "size_bytes": self.size_bytes or None,
            "latency_ms": self.latency_ms if self.scores else None,
            "error": self.error,
        }


@dataclass
class SearchConfig:
    families: list[str]
    metric: str
    folds: int
    seed: int
    processes: int = 1
    memory_mb: int = 2048
    #: A fold running longer than this is killed and its trial failed: one slow configuration must not eat the
    #: budget.
    trial_timeout_s: float = 60.0
    fold_path: str = DEFAULT_FOLD
    preload: list[str] = field(default_factory=list)


class Search:
    def __init__(self, config: SearchConfig, payload: Any, report: Report) -> None:
        self.config = config
        self.payload = payload
        self.report = report
        self.trials: list[TrialRecord] = []

    def best(self) -> TrialRecord | None:
        complete = [t for t in self.trials if t.state == "complete"]
        if not complete:
            return None
        best = complete[0]
        for trial in complete[1:]:
            if better(self.config.metric, statistics.fmean(trial.scores), statistics.fmean(best.scores)):
                best = trial
        return best

    def ranked(self) -> list[TrialRecord]:
        """Complete trials best first, then pruned ones (by their partial mean), then failed ones."""
        sign = 1.0 if self.config.metric in LOWER_IS_BETTER else -1.0
        order = {"complete": 0, "pruned": 1, "running": 2, "failed": 3}

        def key(t: TrialRecord) -> tuple[int, float, int]:
            mean = statistics.fmean(t.scores) if t.scores else float("inf")
            return order.get(t.state, 3), sign * mean if t.scores else float("inf"), t.number

        return sorted(self.trials, key=key)

    def run(self, stop_at: Callable[[], float]) -> None:
        """Search until ``stop_at()`` (a monotonic time, recomputed as the best trial's refit estimate
        changes)."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        logging.getLogger("optuna").setLevel(logging.WARNING)
        study = optuna.create_study(
            direction="minimize" if self.config.metric in LOWER_IS_BETTER else "maximize",
            sampler=optuna.samplers.TPESampler(seed=self.config.seed, n_startup_trials=8),
            pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
        )
        for family in self.config.families:
            study.enqueue_trial({"family": family}, user_attrs={"default": True})
        context = fork_context(self.config.preload)
        processes = [self._start(context) for _ in range(self.config.processes)]
        try:
            self._loop(study, context, processes, stop_at)
        finally:
            for process in processes:
                if process.busy:
                    self._fail(study, process.task, "stopped by the time budget", state="failed")
                process.stop()

    def _start(self, context: Any) -> TrialProcess:
        return TrialProcess(context, self.payload, self.config.memory_mb, self.config.fold_path)

    def _loop(self, study: Any, context: Any, processes: list[TrialProcess], stop_at: Callable[[], float]) -> None:
        while True:
            now = time.monotonic()
            if now >= stop_at():
                return
            for process in processes:
                if not process.busy:
                    self._begin(study, process)
            handles: dict[Any, TrialProcess] = {p.conn: p for p in processes if p.busy}
            handles.update({p.process.sentinel: p for p in processes if p.busy})
            ready = wait(list(handles), timeout=max(0.01, min(0.25, stop_at() - now)))
            seen: set[int] = set()
            for handle in ready:
                process = handles[handle]
                if id(process) in seen or not process.busy:
                    continue
                seen.add(id(process))
                kind, value = process.reply()
                record: TrialRecord = process.task
                if kind == "ok":
                    self._fold_done(study, process, record, value)
                else:
                    self._fail(study, record, str(value), state="failed")
                    process.task = None
                    if kind == "died":
                        process.stop()
                        processes[processes.index(process)] = self._start(context)
            for index, process in enumerate(processes):
                if process.busy and time.monotonic() - process.since > self.config.trial_timeout_s:
                    self._fail(study, process.task, f"took over {self.config.trial_timeout_s:.0f} s", state="failed")
                    process.task = None
                    process.stop()
                    processes[index] = self._start(context)

    def _begin(self, study: Any, process: TrialProcess) -> None:
        trial = study.ask()
        family = trial.suggest_categorical("family", self.config.families)
        default = bool(trial.user_attrs.get("default"))
        config = defaults(family) if default else suggest(trial, family)
        record = TrialRecord(len(self.trials), family, config["params"], default, trial, pid=process.pid)
        self.trials.append(record)
        process.run(record, config, 0)

    def _fold_done(self, study: Any, process: TrialProcess, record: TrialRecord, result: dict[str, Any]) -> None:
        import optuna

        record.scores.append(float(result["score"]))
        record.fit_s.append(float(result["fit_s"]))
        record.size_bytes, record.latency_ms = int(result["size_bytes"]), float(result["latency_ms"])
        step = len(record.scores)
        record.optuna_trial.report(statistics.fmean(record.scores), step)
        if step >= self.config.folds:
            record.state = "complete"
            study.tell(record.optuna_trial, statistics.fmean(record.scores))
        elif not record.default and record.optuna_trial.should_prune():
            record.state = "pruned"
            study.tell(record.optuna_trial, state=optuna.trial.TrialState.PRUNED)
        else:
            process.run(record, {"family": record.family, "params": record.params}, step)
            return
        process.task = None
        self._finished(record)

    def _fail(self, study: Any, record: TrialRecord, reason: str, *, state: str) -> None:
        import optuna

        record.state, record.error = state, reason
        study.tell(record.optuna_trial, state=optuna.trial.TrialState.FAIL)
        self._finished(record)

    def _finished(self, record: TrialRecord) -> None:
        self.report({"event": "trial", **record.row(), "pid": record.pid})
