"""The search on its own: each fold in a trial process; a trial that raises, one whose process is killed and one
that runs out of memory are failed trials, and the search goes on."""

from __future__ import annotations

import time

import pytest

from conftest import scaled
from stratus.automl.search import Search, SearchConfig


def test_failing_trials_are_recorded_and_the_search_goes_on() -> None:
    events: list[dict[str, object]] = []
    config = SearchConfig(
        families=["raises", "killed", "memory", "good"],
        metric="accuracy",
        folds=3,
        seed=0,
        processes=2,
        memory_mb=256,
        fold_path="automl_faults:fold",
    )
    search = Search(config, payload=None, report=events.append)
    started = time.monotonic()
    # Stop once good trials after the failed ones have completed, or at an outer deadline.
    deadline = started + scaled(20)

    def stop_at() -> float:
        later = [t for t in search.trials if t.family == "good" and t.state == "complete" and t.number > 3]
        return started if len(later) >= 3 else deadline

    search.run(stop_at)
    by_family = {t.family: t for t in search.trials if t.default}
    raised = by_family["raises"]
    assert raised.state == "failed" and "ValueError: this configuration cannot fit" in raised.error
    assert by_family["killed"].state == "failed" and "killed (SIGKILL)" in by_family["killed"].error
    assert by_family["memory"].state == "failed" and "out of memory" in by_family["memory"].error
    good = [t for t in search.trials if t.family == "good" and t.state == "complete"]
    assert len([t for t in good if t.number > 3]) >= 3  # the search went on after the failures
    best = search.best()
    assert best is not None and best.family == "good" and best.params == {"scaling": "minmax"}
    assert best.row()["cv_mean"] == 0.91 and best.row()["folds"] == 3
    # Every trial that ended was reported, failures with their reason.
    reported = {e["trial"]: e for e in events}
    assert reported[by_family["killed"].number]["state"] == "failed"
    assert all(t.state in ("complete", "pruned", "failed") for t in search.trials)


def test_the_choice_is_made_on_a_second_fold_split() -> None:
    """A configuration that leads on the search's folds by luck loses to a steady one on the confirmation
    stage's fresh folds, and the refit takes the steady one."""
    config = SearchConfig(
        families=["lucky", "steady"],
        metric="accuracy",
        folds=3,
        seed=0,
        processes=2,
        fold_path="automl_faults:fold",
        confirm_share=0.5,
    )
    search = Search(config, payload=None, report=lambda event: None)
    deadline = time.monotonic() + 3.0  # the search's length, not a wait: it returns once all are confirmed

    search.run(lambda: deadline)
    ranked = [t for t in search.ranked() if t.state == "complete"]
    # The leader on the search's folds:
    assert ranked[0].family == "lucky" and ranked[0].row()["cv_mean"] == pytest.approx(0.95)
    confirmed = [t for t in search.trials if t.confirm == "done"]
    assert {t.family for t in confirmed} == {"lucky", "steady"}
    lucky = next(t for t in confirmed if t.family == "lucky")
    assert lucky.row()["confirm_mean"] == pytest.approx(0.5) and lucky.row()["folds"] == 3
    chosen = search.chosen()
    assert chosen[0].family == "steady" and chosen[0].row()["confirm_mean"] == pytest.approx(0.9)
