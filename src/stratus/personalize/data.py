"""A personalization dataset: pairs of texts that belong together, or texts with labels, read from a project's
uploaded CSV. Torch-free: the server checks a dataset with it at submit (a clear 400 for one that cannot
train), and the job's child reads the same rows and the same held-out split with it.

- pairs: columns ``anchor`` and ``positive`` (e.g. a query and the passage that answers it). Trained with
  in-batch negatives; judged by retrieval recall@10 of the held-out anchors' positives among every positive.
- labels: columns ``text`` and ``label``. Trained contrastively (texts of one label close, others apart);
  judged by the kNN accuracy of the held-out texts against the training texts.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from typing import Literal

from stratus.errors import InvalidInput

Mode = Literal["pairs", "labels"]
PAIR_COLUMNS = ("anchor", "positive")
LABEL_COLUMNS = ("text", "label")
#: Fewer usable rows than this leave too little to train on and to judge the result by.
MIN_PAIRS = 8
MIN_LABELLED = 8
MAX_ROWS = 200_000
MAX_TEXT_CHARS = 10_000


@dataclass(frozen=True)
class Examples:
    """Usable rows, split: ``train`` and ``held_out`` hold (first, second) pairs; in labels mode the second of
    each pair is the label."""

    mode: Mode
    train: list[tuple[str, str]]
    held_out: list[tuple[str, str]]
    dropped: int  # rows left out: empty, identical texts, duplicates

    def summary(self) -> dict[str, int | str]:
        return {"mode": self.mode, "train": len(self.train), "held_out": len(self.held_out), "dropped": self.dropped}


def _rows(data: bytes, dataset: str) -> tuple[list[str], list[list[str]]]:
    try:
        text = data.decode("utf-8-sig")
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    except (UnicodeDecodeError, csv.Error):
        raise InvalidInput(f"dataset {dataset!r} is not a readable UTF-8 CSV") from None
    if not rows:
        raise InvalidInput(f"dataset {dataset!r} is empty")
    return [h.strip() for h in rows[0]], rows[1:]


def _mode_of(header: list[str], dataset: str, wanted: Mode | None) -> Mode:
    found: list[Mode] = []
    if all(c in header for c in PAIR_COLUMNS):
        found.append("pairs")
    if all(c in header for c in LABEL_COLUMNS):
        found.append("labels")
    if wanted is not None and wanted not in found:
        columns = ",".join(PAIR_COLUMNS if wanted == "pairs" else LABEL_COLUMNS)
        raise InvalidInput(f"dataset {dataset!r} has no {columns} columns for mode {wanted!r}")
    if not found:
        raise InvalidInput(
            f"dataset {dataset!r} has no pairs and no labels: personalization needs a CSV with columns "
            f"{','.join(PAIR_COLUMNS)} (pairs of texts that belong together) or {','.join(LABEL_COLUMNS)} "
            f"(labelled texts); its columns are {', '.join(header) or 'none'}"
        )
    return wanted or found[0]


def _held_out_first(key: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{key}".encode()).digest()


def read(data: bytes, dataset: str, *, mode: Mode | None, held_out: float, seed: int) -> Examples:
    """The dataset's usable rows and their held-out split, or InvalidInput saying why it cannot train.

    The split goes by a hash of the first text (and the seed), so it does not depend on row order and the
    server and the child agree on it; in labels mode it keeps at least one training text of every label."""
    header, rows = _rows(data, dataset)
    chosen = _mode_of(header, dataset, mode)
    if len(rows) > MAX_ROWS:
        raise InvalidInput(f"dataset {dataset!r} has {len(rows)} rows; personalization takes at most {MAX_ROWS}")
    first, second = PAIR_COLUMNS if chosen == "pairs" else LABEL_COLUMNS
    i, j = header.index(first), header.index(second)
    seen: set[tuple[str, str]] = set()
    usable: list[tuple[str, str]] = []
    for row in rows:
        if len(row) != len(header):
            continue
        a, b = " ".join(row[i].split())[:MAX_TEXT_CHARS], row[j].strip()[:MAX_TEXT_CHARS]
        if chosen == "pairs":
            b = " ".join(b.split())
        if not a or not b or (chosen == "pairs" and a == b) or (a, b) in seen:
            continue
        seen.add((a, b))
        usable.append((a, b))
    dropped = len(rows) - len(usable)
    if chosen == "pairs":
        if len(usable) < MIN_PAIRS:
            raise InvalidInput(
                f"dataset {dataset!r} has {len(usable)} usable pairs; personalization needs at least {MIN_PAIRS} "
                f"rows with two different non-empty texts in {first} and {second}"
            )
    else:
        counts: dict[str, int] = {}
        for _, label in usable:
            counts[label] = counts.get(label, 0) + 1
        if len(usable) < MIN_LABELLED or sum(1 for c in counts.values() if c >= 2) < 2:
            raise InvalidInput(
                f"dataset {dataset!r} has {len(usable)} usable labelled texts in {len(counts)} labels; "
                f"personalization needs at least {MIN_LABELLED}, and two labels with two texts or more"
            )
    ordered = sorted(usable, key=lambda pair: _held_out_first(pair[0], seed))
    count = max(2, round(len(ordered) * held_out))
    test, train = ordered[:count], ordered[count:]
    if chosen == "labels":
        # A held-out text whose label has no training text cannot be judged by its neighbours: train on it.
        trained = {label for _, label in train}
        for pair in list(test):
            if pair[1] not in trained:
                test.remove(pair)
                train.append(pair)
                trained.add(pair[1])
        if len(test) < 2:
            raise InvalidInput(f"dataset {dataset!r} leaves fewer than 2 held-out texts whose label is also trained")
    return Examples(chosen, train, test, dropped)


__all__ = ["Examples", "Mode", "read"]
