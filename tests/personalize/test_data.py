"""Personalization data, without a server: the two shapes, what is dropped, the held-out split, the refusals."""

from __future__ import annotations

import numpy as np
import pytest
from personalize_helpers import csv_bytes, pairs_csv

from stratus.errors import InvalidInput
from stratus.personalize.data import read
from stratus.personalize.worker import knn_accuracy, recall_at


def test_pairs_split_by_hash_whatever_the_row_order() -> None:
    examples = read(pairs_csv(), "p", mode=None, held_out=0.2, seed=0)
    assert examples.mode == "pairs" and len(examples.train) + len(examples.held_out) == 72
    assert len(examples.held_out) == round(72 * 0.2) and not set(examples.train) & set(examples.held_out)
    header, *rows = pairs_csv().decode().splitlines()
    shuffled = "\n".join([header, *reversed(rows)]).encode()
    again = read(shuffled, "p", mode=None, held_out=0.2, seed=0)
    assert sorted(again.held_out) == sorted(examples.held_out)
    assert sorted(read(pairs_csv(), "p", mode=None, held_out=0.2, seed=1).held_out) != sorted(examples.held_out)


def test_unusable_rows_are_dropped_and_counted() -> None:
    rows = [[f"anchor {i}", f"positive {i}"] for i in range(10)]
    rows += [["same", "same"], ["", "empty anchor"], ["anchor 0", "positive 0"], ["  spaced   out ", " x "]]
    examples = read(csv_bytes(rows, ["anchor", "positive"]), "p", mode="pairs", held_out=0.2, seed=0)
    assert examples.dropped == 3 and ("spaced out", "x") in examples.train + examples.held_out


def test_labels_keep_every_held_out_label_in_training() -> None:
    rows = [[f"text {i}", "common"] for i in range(20)] + [["only one of its kind", "rare"], ["another", "pair"]]
    rows += [["and its twin", "pair"]]
    examples = read(csv_bytes(rows, ["text", "label"]), "l", mode=None, held_out=0.5, seed=0)
    assert examples.mode == "labels"
    trained = {label for _, label in examples.train}
    assert all(label in trained for _, label in examples.held_out)


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (["a", "b"], [["1", "2"]] * 10, "has no pairs and no labels"),
        (["anchor", "positive"], [["x", "y"]] * 20, "1 usable pairs"),
        (["anchor", "positive"], [[f"a{i}", f"a{i}"] for i in range(20)], "0 usable pairs"),
        (["text", "label"], [[f"t{i}", "one"] for i in range(20)], "two labels with two texts"),
        (["text", "label"], [[f"t{i}", str(i)] for i in range(20)], "two labels with two texts"),
    ],
)
def test_data_that_cannot_train_is_refused(header: list[str], rows: list[list[str]], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        read(csv_bytes(rows, header), "d", mode=None, held_out=0.2, seed=0)


def test_refusals_of_files_that_are_no_csv() -> None:
    with pytest.raises(InvalidInput, match="not a readable UTF-8 CSV"):
        read(b"\xff\xfe\x00bad", "d", mode=None, held_out=0.2, seed=0)
    with pytest.raises(InvalidInput, match="no text,label columns"):
        read(pairs_csv(), "d", mode="labels", held_out=0.2, seed=0)


def test_metrics_count_ties_for_the_query_and_vote_by_majority() -> None:
    candidates = np.eye(3, dtype=np.float32)
    queries = np.array([[1, 0, 0], [0.6, 0.8, 0]], dtype=np.float32)
    assert recall_at(queries, candidates, [0, 0], 1) == 0.5  # the second query's nearest is candidate 1
    assert recall_at(queries, candidates, [0, 0], 2) == 1.0
    train = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)
    assert knn_accuracy(np.array([[1, 0.05]], dtype=np.float32), ["a"], train, ["a", "a", "b"], 3) == 1.0
    assert knn_accuracy(np.array([[0, 1]], dtype=np.float32), ["b"], train, ["a", "a", "b"], 3) == 0.0
