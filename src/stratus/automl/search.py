"""The search: an Optuna study (TPE sampler, successive-halving pruner) over trainer families and their
hyperparameters, scored by k-fold cross-validation on the training split, each fold in a trial process.

A trial's fold scores reach the study as intermediate values (the mean of its folds so far), so a poor
configuration is pruned after one fold, or three, instead of costing all k: successive halving over folds.
The default configuration of every family is tried first. The study is asked for a new trial only while
there is time for it before ``stop_at``; at ``stop_at`` the running folds are killed and their trials are
recorded as stopped by the budget.

The best cross-validation mean of hundreds of trials is partly luck (the winner's curse: on 400 rows one
fold's noise is larger than the gaps between good configurations). So the last part of the search time is a
confirmation stage: the leading configurations, and the best default configuration beside them, are each
evaluated again on a second, independent fold split (other shuffle, other seed), and the choice is made on
those fresh scores alone, which no selection has touched: ``chosen()``.
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
#: A fold's time besides its fit (scoring, the latency and size measurements, the pipe), and the margin on the
#: confirmation stage's estimate of its folds' time (the machine may be busier than when they were measured).
FOLD_OVERHEAD_S = 0.1
CONFIRM_MARGIN = 1.5


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
    #: Fold scores on the second, independent fold split (the confirmation stage), and its state.
    fresh: list[float] = field(default_factory=list)
    confirm: str = ""  # "", "running", "done", "failed"
    #: The second split's held-out outputs by fold (values, or class probabilities), for an ensemble's estimate.
    held_out: dict[int, Any] = field(default_factory=dict)

    def fresh_mean(self) -> float:
        return statistics.fmean(self.fresh)

    def fresh_se(self) -> float:
        """The standard error of the fresh mean (fold scores' spread over the square root of their count)."""
        return statistics.stdev(self.fresh) / len(self.fresh) ** 0.5 if len(self.fresh) > 1 else 0.0

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
            "confirm_mean": self.fresh_mean() if self.confirm == "done" else None,
            "confirm_se": self.fresh_se() if self.confirm == "done" else None,
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
    #: The share of the search time kept for the confirmation stage (0: none, the best CV mean is chosen).
    confirm_share: float = 0.3
    #: The leading configurations confirmed besides each family's best and the best default configuration.
    confirm_top: int = 6


class Search:
    def __init__(self, config: SearchConfig, payload: Any, report: Report) -> None:
        self.config = config
        self.payload = payload
        self.report = report
        self.trials: list[TrialRecord] = []
        self.started, self.confirm_started = time.monotonic(), False

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

    def candidates(self) -> list[TrialRecord]:
        """What the confirmation stage evaluates, in order: the leading configuration, the best default one
        (the untuned baseline the tuned ones must beat on fresh folds), each other family's best (near-copies
        of one configuration share its luck; families differ), then the next leading configurations."""
        complete = [t for t in self.ranked() if t.state == "complete"]
        leaders: dict[str, TrialRecord] = {}
        for trial in complete:
            leaders.setdefault(trial.family, trial)
        default = [t for t in complete if t.default][:1]
        order = [*complete[:1], *default, *leaders.values(), *complete[: self.config.confirm_top]]
        return list({id(t): t for t in order}.values())

    def chosen(self) -> list[TrialRecord]:
        """Complete trials in the order the refit takes them. Confirmed ones first, by their fresh mean: the
        best, except that a default configuration within one standard error of it goes first (the difference
        is noise, and the default carries no tuning to have overfitted the folds); then the others by their
        CV mean."""
        complete = [t for t in self.ranked() if t.state == "complete"]
        confirmed = [t for t in complete if t.confirm == "done"]
        if not confirmed:
            return complete
        sign = 1.0 if self.config.metric in LOWER_IS_BETTER else -1.0
        confirmed.sort(key=lambda t: (sign * t.fresh_mean(), t.number))
        lead = confirmed[0]
        near = [t for t in confirmed if t.default and abs(t.fresh_mean() - lead.fresh_mean()) <= lead.fresh_se()]
        if near and not lead.default:
            confirmed.remove(near[0])
            confirmed.insert(0, near[0])
        return confirmed + [t for t in complete if t.confirm != "done"]

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
        self.started, self.confirm_started = time.monotonic(), False
        try:
            self._loop(study, context, processes, stop_at)
        finally:
            for process in processes:
                if process.busy:
                    record = process.task
                    if record.state == "complete":  # a confirmation cut short: the trial itself stands
                        record.confirm = "failed"
                    else:
                        self._fail(study, record, "stopped by the time budget", state="failed")
                process.stop()

    def confirming(self, stop: float) -> bool:
        """Whether the search is in its confirmation stage (once in it, it stays): from when the time left is
        what the candidates' folds need on the second split (their fold times, with a margin for a busy
        machine), at most the last ``confirm_share`` of the search's time. Until a trial has completed there
        is nothing to confirm, and the search goes on."""
        if self.confirm_started:
            return True
        share = self.config.confirm_share
        candidates = self.candidates()
        if share <= 0 or not candidates:
            return False
        folds = sum(statistics.fmean(t.fit_s) + FOLD_OVERHEAD_S for t in candidates) * self.config.folds
        need = CONFIRM_MARGIN * folds / max(1, self.config.processes)
        now = time.monotonic()
        self.confirm_started = now >= stop - min(need, share * (stop - self.started))
        return self.confirm_started

    def _start(self, context: Any) -> TrialProcess:
        return TrialProcess(context, self.payload, self.config.memory_mb, self.config.fold_path)

    def _loop(self, study: Any, context: Any, processes: list[TrialProcess], stop_at: Callable[[], float]) -> None:
        while True:
            now = time.monotonic()
            if now >= stop_at():
                return
            confirming = self.confirming(stop_at())
            for process in processes:
                if not process.busy:
                    if not confirming:
                        self._begin(study, process)
                    elif not self._confirm_next(process):
                        break
            if confirming and not any(p.busy for p in processes):
                return  # every candidate confirmed: the time left goes to the refit
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
                if kind == "ok" and record.confirm == "running":
                    self._confirm_done(process, record, value)
                elif kind == "ok":
                    self._fold_done(study, process, record, value)
                else:
                    if record.confirm == "running":  # the trial's own folds stand; its confirmation failed
                        record.confirm = "failed"
                    else:
                        self._fail(study, record, str(value), state="failed")
                    process.task = None
                    if kind == "died":
                        process.stop()
                        processes[processes.index(process)] = self._start(context)
            for index, process in enumerate(processes):
                if process.busy and time.monotonic() - process.since > self.config.trial_timeout_s:
                    if process.task.confirm == "running":
                        process.task.confirm = "failed"
                    else:
                        took = f"took over {self.config.trial_timeout_s:.0f} s"
                        self._fail(study, process.task, took, state="failed")
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

    def _confirm_next(self, process: TrialProcess) -> bool:
        """Start the next candidate's first fold of the second split; False when none is left."""
        for record in self.candidates():
            if not record.confirm:
                record.confirm = "running"
                process.run(record, {"family": record.family, "params": record.params}, self.config.folds)
                return True
        return False

    def _confirm_done(self, process: TrialProcess, record: TrialRecord, result: dict[str, Any]) -> None:
        record.fresh.append(float(result["score"]))
        if "held_out" in result:
            record.held_out[len(record.fresh) - 1] = result["held_out"]
        if len(record.fresh) < self.config.folds:
            fold = self.config.folds + len(record.fresh)
            process.run(record, {"family": record.family, "params": record.params}, fold)
            return
        record.confirm, process.task = "done", None
        self._finished(record)

    def _fail(self, study: Any, record: TrialRecord, reason: str, *, state: str) -> None:
        import optuna

        record.state, record.error = state, reason
        study.tell(record.optuna_trial, state=optuna.trial.TrialState.FAIL)
        self._finished(record)

    def _finished(self, record: TrialRecord) -> None:
        self.report({"event": "trial", **record.row(), "pid": record.pid})
