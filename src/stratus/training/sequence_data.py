"""Numeric sequence datasets for the ``rnn`` and ``transformer`` trainers (numpy only: the server parses uploads
with it, so no torch here).

Two ways a dataset holds sequences:

- a CSV column whose every cell is a JSON list: ``[0.1, 0.4, 0.2]`` (one feature per time step) or
  ``[[0.1, 2.0], [0.4, 1.5]]`` (several features per step, the same number in every cell). Cells may hold
  sequences of different lengths (ragged): they are padded to the longest with NaN time steps, which the
  models mask out, so a shorter sequence gives exactly the result it gives alone;
- an NPZ whose ``X`` has shape [n, time, features] (the same 3-D array a grayscale image set has: parsed as one
  channel of [time, features], which these trainers read back as steps and features).

A dataset's longest sequence is checked at submit against ``settings.sequence_max_length``: the trainers pad
every sequence to the longest, so one outlier of a million steps would make every row a million steps long.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from stratus.errors import InvalidInput
from stratus.types import Array

#: The CSV line a data row is on: the header is line 1.
_FIRST_ROW_LINE = 2


def _looks_like_list(value: str) -> bool:
    text = value.strip()
    return text.startswith("[") and text.endswith("]")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_list_column(name: str, raw: list[str]) -> list[Array] | None:
    """The column's sequences, each [steps, features] float32; None when not every cell is a JSON list (then it
    is an ordinary categorical or text column). A column of lists that are not all well formed is refused."""
    if not raw or not all(_looks_like_list(v) for v in raw):
        return None
    sequences: list[Array] = []
    width: int | None = None
    for row, cell in enumerate(raw):
        where = f"column {name!r}, CSV line {row + _FIRST_ROW_LINE}"
        try:
            value = json.loads(cell)
        except (ValueError, RecursionError):
            raise InvalidInput(f"{where}: {cell[:40]!r} is not a JSON list of numbers") from None
        if not isinstance(value, list) or not value:
            raise InvalidInput(f"{where}: a sequence needs at least one time step")
        if all(_number(v) for v in value):
            steps = [[float(v)] for v in value]
        elif all(isinstance(v, list) and v and all(_number(x) for x in v) for v in value):
            steps = [[float(x) for x in v] for v in value]
            if len({len(v) for v in steps}) != 1:
                raise InvalidInput(f"{where}: every time step needs the same number of features")
        else:
            raise InvalidInput(f"{where}: a sequence is a list of numbers, or a list of equally long lists of numbers")
        if width is None:
            width = len(steps[0])
        elif len(steps[0]) != width:
            raise InvalidInput(f"{where}: {len(steps[0])} features per time step, but earlier rows have {width}")
        array = np.asarray(steps, dtype=np.float64)
        if not np.isfinite(array).all():
            raise InvalidInput(f"{where}: NaN or infinite values are refused in sequences")
        sequences.append(array.astype(np.float32))
    return sequences


def lengths_of(sequences: list[Array]) -> Array:
    return np.array([len(s) for s in sequences], dtype=np.int64)


def describe(sequences: list[Array]) -> dict[str, int]:
    """What a dataset's schema records of a sequence column: the submit check reads it without the data."""
    lengths = lengths_of(sequences)
    return {"min_length": int(lengths.min()), "max_length": int(lengths.max()), "width": int(sequences[0].shape[1])}


def pad(sequences: list[Array], length: int | None = None) -> Array:
    """[n, length, features] float32, each sequence followed by NaN time steps (the padding the models mask)."""
    longest = length if length is not None else max(len(s) for s in sequences)
    out = np.full((len(sequences), longest, sequences[0].shape[1]), np.nan, dtype=np.float32)
    for i, sequence in enumerate(sequences):
        steps = sequence[:longest]
        out[i, : len(steps)] = steps
    return out


def _limit_error(name: str, low: int, high: int, limit: int) -> InvalidInput:
    shape = f"from {low} to {high} steps (ragged)" if low != high else f"of {high} steps"
    return InvalidInput(
        f"dataset {name!r} has sequences {shape}; the longest is over this server's limit of {limit} steps "
        f"(STRATUS_SEQUENCE_MAX_LENGTH): every sequence is padded to the longest, so cut or split the long "
        f"sequences, or drop the outliers"
    )


def check_sequence_request(
    model: str, dataset: dict[str, Any], max_length: int, *, embedding_dim: int, heads: int
) -> None:
    """Refuse at submit what the rnn and transformer trainers cannot train, with the reason: a dataset that is
    neither one text column nor one numeric sequence, sequences over the length limit, heads that do not
    divide the width. (Plain values, not the request: training/params.py calls this, and this module imports
    nothing of the training package, which parses datasets with it.)"""
    if model == "transformer" and embedding_dim % heads:
        raise InvalidInput(f"embedding_dim ({embedding_dim}) must be a multiple of heads ({heads})")
    schema = dataset["schema"]
    task = dataset["task"]
    features = schema.get("features", [])
    kinds = [f["kind"] for f in features]
    if task not in ("classification", "regression"):
        raise InvalidInput(f"dataset {dataset['name']!r} has no target; {model} needs one")
    usage = (
        f"{model} trains on one free-text column (classification), one sequence column (a CSV column of JSON "
        "lists) or an NPZ whose X is [n, time, features]"
    )
    if "text" in kinds or "sequence" in kinds:
        if len(kinds) != 1:
            raise InvalidInput(f"{usage}; dataset {dataset['name']!r} has the columns {[f['name'] for f in features]}")
        if kinds == ["text"]:
            if task != "classification":
                raise InvalidInput(f"{model} on text needs a classification target")
            return
        low, high = int(features[0]["min_length"]), int(features[0]["max_length"])
        if high > max_length:
            raise _limit_error(dataset["name"], low, high, max_length)
        return
    image = schema.get("image")
    if image is None or dataset.get("format") != "npz" or image["channels"] != 1:
        raise InvalidInput(f"{usage}; dataset {dataset['name']!r} is none of these")
    if int(image["height"]) > max_length:
        raise _limit_error(dataset["name"], int(image["height"]), int(image["height"]), max_length)
