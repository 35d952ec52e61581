"""Dataset parsing, validation, schema inference and statistics profiles (numpy only, no torch).

The server parses an upload to refuse bad data with a clear message before storing anything; the
training child parses the same stored bytes again with the same code, so both see the same data.
"""

from __future__ import annotations

import csv
import functools
import io
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from stratus.errors import InvalidInput, StratusError
from stratus.training import drift_reference
from stratus.training.archive import read_zip
from stratus.training.drift_reference import Layout, Reference
from stratus.training.sequence_data import describe, lengths_of, parse_list_column
from stratus.types import Array

Format = Literal["csv", "npz", "images"]
BUILTINS = ("iris", "wine", "breast_cancer", "digits", "diabetes")
MAX_CLASSES_FOR_INTEGER_TARGET = 50
MAX_CATEGORIES = 200
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class ParsedDataset:
    X: Array
    y: Array | None
    feature_names: list[str]
    feature_kinds: list[str]
    task: str
    classes: list[str] = field(default_factory=list)
    image_shape: tuple[int, int, int] | None = None  # channels, height, width
    resized: int = 0  # images brought to the common size
    categorical: Array | None = None  # raw string values, one column per categorical feature
    categorical_names: list[str] = field(default_factory=list)
    text: Array | None = None  # free-text columns (for the text classifier)
    text_names: list[str] = field(default_factory=list)
    sequences: list[Array] | None = None  # a column of JSON lists: one [steps, features] array per row
    sequence_names: list[str] = field(default_factory=list)
    sequence_info: dict[str, dict[str, int]] = field(default_factory=dict)  # min/max length, width, per column
    sequence_lengths: dict[str, Array] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return int(self.X.shape[0])


def _float_or_nan(value: str) -> float | None:
    text = value.strip()
    if text == "" or text.lower() in ("na", "nan", "null", "none"):
        return float("nan")
    try:
        return float(text)
    except ValueError:
        return None


def _check_finite(name: str, column: Array, missing: str) -> None:
    if np.isinf(column).any():
        raise InvalidInput(f"column {name!r} has infinite values; they are refused")
    if missing == "error" and np.isnan(column).any():
        count = int(np.isnan(column).sum())
        raise InvalidInput(
            f"column {name!r} has {count} missing value(s); upload with missing=impute to fill them during "
            "training (the imputation is baked into the model)"
        )


def _target_task(y_raw: list[str], task: str | None) -> tuple[Array, str, list[str]]:
    numeric = [_float_or_nan(v) for v in y_raw]
    if any(v is None for v in numeric) or task == "classification":
        classes = sorted(set(y_raw))
        if "" in classes:
            raise InvalidInput("the target column has empty values")
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[v] for v in y_raw], dtype=np.int64), "classification", classes
    values = np.array(numeric, dtype=np.float64)
    if np.isnan(values).any() or np.isinf(values).any():
        raise InvalidInput("the target column has missing or infinite values")
    integral = np.array_equal(values, np.round(values))
    if task is None and integral and len(np.unique(values)) <= MAX_CLASSES_FOR_INTEGER_TARGET:
        task = "classification"
    if task == "classification":
        classes = [str(int(c)) for c in np.unique(values)]
        index = {c: i for i, c in enumerate(np.unique(values))}
        return np.array([index[v] for v in values], dtype=np.int64), "classification", classes
    return values, "regression", []


def parse_csv(data: bytes, target: str | None, *, missing: str = "error", task: str | None = None) -> ParsedDataset:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("the CSV is not UTF-8 text") from None
    try:
        # newline="" as the csv module asks: a lone carriage return inside a field is then data, not an error.
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    except csv.Error as exc:  # e.g. a NUL byte or a field over the size limit
        raise InvalidInput(f"the CSV cannot be read: {exc}") from None
    if len(rows) < 2:
        raise InvalidInput("the CSV is empty: it needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header) or "" in header:
        raise InvalidInput("the CSV header must name every column, each name once")
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InvalidInput(f"CSV row {number} has {len(row)} fields but the header has {len(header)}")
    if target is not None and target not in header:
        raise InvalidInput(f"the target column {target!r} does not exist; the columns are {', '.join(header)}")
    columns = {name: [row[i] for row in rows[1:]] for i, name in enumerate(header)}
    names, kinds, features = [], [], []
    categorical_names, categorical = [], []
    text_names, texts = [], []
    sequence_names, sequences = [], []
    for name in header:
        if name == target:
            continue
        values = [_float_or_nan(v) for v in columns[name]]
        if any(v is None for v in values):
            found = parse_list_column(name, columns[name])
            if found is not None:  # every cell a JSON list: a numeric sequence (training/sequence_data.py)
                sequence_names.append(name)
                sequences.append(found)
                continue
            raw = [v.strip() for v in columns[name]]
            distinct = len(set(raw))
            if distinct > MAX_CATEGORIES or (distinct > 20 and distinct > 0.5 * len(raw)):
                text_names.append(name)
                texts.append(raw)
                continue
            categorical_names.append(name)
            categorical.append(raw)
            continue
        column = np.array(values, dtype=np.float64)
        _check_finite(name, column, missing)
        names.append(name)
        kinds.append("numeric")
        features.append(column)
    if not features and not categorical and not texts and not sequences:
        raise InvalidInput("the CSV has no feature columns besides the target")
    X = np.stack(features, axis=1) if features else np.zeros((len(rows) - 1, 0))
    cats = np.array(categorical, dtype=object).T if categorical else None
    all_names = names + categorical_names + text_names + sequence_names
    all_kinds = kinds + ["categorical"] * len(categorical_names) + ["text"] * len(text_names)
    all_kinds += ["sequence"] * len(sequence_names)
    if target is None:
        parsed = ParsedDataset(X, None, all_names, all_kinds, "unsupervised")
    else:
        y, found_task, classes = _target_task([v.strip() for v in columns[target]], task)
        parsed = ParsedDataset(X, y, all_names, all_kinds, found_task, classes)
    parsed.categorical, parsed.categorical_names = cats, categorical_names
    parsed.text, parsed.text_names = (np.array(texts, dtype=object).T if texts else None), text_names
    # The sequence trainers take one sequence column (the submit check refuses more); the schema describes each.
    parsed.sequences, parsed.sequence_names = (sequences[0] if sequences else None), sequence_names
    parsed.sequence_info = {n: describe(seqs) for n, seqs in zip(sequence_names, sequences, strict=True)}
    parsed.sequence_lengths = {n: lengths_of(seqs) for n, seqs in zip(sequence_names, sequences, strict=True)}
    return parsed


def parse_npz(data: bytes, *, missing: str = "error", task: str | None = None) -> ParsedDataset:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as exc:
        raise InvalidInput(f"the NPZ cannot be read without pickle (object arrays are refused): {exc}") from None
    except Exception as exc:
        raise InvalidInput(f"not a valid NPZ file: {exc}") from None
    if "X" not in arrays:
        raise InvalidInput(f"the NPZ needs an array 'X' (and 'y' for supervised training); it has {sorted(arrays)}")
    X = arrays["X"]
    if X.dtype.kind not in "biuf" or X.ndim < 2 or X.shape[0] == 0:
        raise InvalidInput(f"'X' must be a non-empty numeric array with rows first, got {X.dtype} {X.shape}")
    X = X.astype(np.float64)
    names = [str(n) for n in arrays["feature_names"]] if "feature_names" in arrays else []
    if X.ndim == 2 and len(names) != X.shape[1]:
        names = [f"x{i}" for i in range(X.shape[1])]
    if X.ndim == 2:
        for i, name in enumerate(names):
            _check_finite(name, X[:, i], missing)
    else:
        _check_finite("X", X.ravel(), missing)
        names = []
    image_shape = None
    if X.ndim == 4:
        image_shape = (int(X.shape[1]), int(X.shape[2]), int(X.shape[3]))
    elif X.ndim == 3:
        X = X[:, None, :, :]
        image_shape = (1, int(X.shape[2]), int(X.shape[3]))
    if "y" not in arrays:
        return ParsedDataset(X, None, names, ["numeric"] * len(names), "unsupervised", image_shape=image_shape)
    y = arrays["y"]
    if y.shape[0] != X.shape[0] or y.ndim != 1:
        raise InvalidInput(f"'y' must be one value per row of 'X': X has {X.shape[0]} rows, y has shape {y.shape}")
    y_values, found_task, classes = _target_task([str(v) for v in y.tolist()], task)
    return ParsedDataset(X, y_values, names, ["numeric"] * len(names), found_task, classes, image_shape)


def parse_image_zip(data: bytes) -> ParsedDataset:
    """A ZIP with one folder per class of PNG/JPEG images (optionally under one top-level folder)."""
    from PIL import Image, UnidentifiedImageError

    samples: list[tuple[str, Array]] = []
    for entry in read_zip(data):
        name = entry.parts[-1]
        if name.startswith(".") or "__MACOSX" in entry.parts:
            continue
        if not name.lower().endswith(IMAGE_SUFFIXES):
            raise InvalidInput(f"archive entry {'/'.join(entry.parts)!r} is not a PNG or JPEG image")
        if len(entry.parts) < 2:
            raise InvalidInput(f"image {name!r} is not inside a class folder (expected CLASS/{name})")
        try:
            with Image.open(io.BytesIO(entry.data)) as image:
                image.load()
                mode = "L" if image.mode in ("1", "L", "I;16", "I", "P", "LA") else "RGB"
                pixels = np.asarray(image.convert(mode), dtype=np.float32)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InvalidInput(f"image {'/'.join(entry.parts)!r} does not decode: {exc}") from None
        samples.append((entry.parts[-2], pixels))
    if not samples:
        raise InvalidInput("the archive holds no images")
    classes = sorted({label for label, _ in samples})
    if len(classes) < 2:
        raise InvalidInput("an image dataset needs at least two class folders")
    modes = {p.ndim for _, p in samples}
    if len(modes) != 1:
        raise InvalidInput("mixed grayscale and colour images: convert them to one kind first")
    shapes = [p.shape for _, p in samples]
    common = max(set(shapes), key=shapes.count)
    resized = 0
    if len(set(shapes)) > 1:
        # Bring every image to the most common size; training and serving resize inside the model too.
        for i, (label, pixels) in enumerate(samples):
            if pixels.shape != common:
                # Decoded as 8-bit L or RGB above, so uint8 holds the values exactly.
                picture = Image.fromarray(pixels.astype(np.uint8)).resize(
                    (common[1], common[0]), Image.Resampling.BILINEAR
                )
                samples[i] = (label, np.asarray(picture, dtype=np.float32))
                resized += 1
    stacked = np.stack([p if p.ndim == 3 else p[:, :, None] for _, p in samples]).transpose(0, 3, 1, 2)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[label] for label, _ in samples], dtype=np.int64)
    c, h, w = stacked.shape[1:]
    parsed = ParsedDataset(stacked, y, [], [], "classification", classes, (int(c), int(h), int(w)))
    parsed.resized = resized
    return parsed


def builtin_npz(name: str) -> bytes:
    """One of scikit-learn's bundled datasets as NPZ bytes (no download)."""
    from sklearn import datasets

    if name not in BUILTINS:
        raise InvalidInput(f"unknown built-in dataset {name!r}; choose one of {', '.join(BUILTINS)}")
    bunch = getattr(datasets, f"load_{name}")()
    X = np.asarray(bunch.data, dtype=np.float64)
    if name == "digits":
        X = X.reshape(-1, 1, 8, 8)
    buffer = io.BytesIO()
    names = np.array([str(n) for n in getattr(bunch, "feature_names", [])] or [f"x{i}" for i in range(X.shape[1])])
    np.savez(buffer, X=X, y=np.asarray(bunch.target), feature_names=names)
    return buffer.getvalue()


def builtin_npz_in_child(name: str) -> bytes:
    """``builtin_npz`` run in a child process, for the server: scikit-learn is a training dependency, like
    torch, and never loads into the server's process. Cached per name (the datasets are fixed)."""
    if name not in BUILTINS:
        raise InvalidInput(f"unknown built-in dataset {name!r}; choose one of {', '.join(BUILTINS)}")
    return _builtin_from_child(name)


@functools.lru_cache(maxsize=len(BUILTINS))
def _builtin_from_child(name: str) -> bytes:
    child = subprocess.run(
        [sys.executable, "-m", "stratus.training.datasets", name], capture_output=True, timeout=300, check=False
    )
    if child.returncode != 0:
        detail = child.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise StratusError(f"the built-in dataset {name!r} could not be loaded: {detail[0]}")
    return child.stdout


def parse(
    fmt: str, data: bytes, *, target: str | None = None, missing: str = "error", task: str | None = None
) -> ParsedDataset:
    if missing not in ("error", "impute"):
        raise InvalidInput("missing must be 'error' or 'impute'")
    if task not in (None, "classification", "regression"):
        raise InvalidInput("task must be 'classification' or 'regression'")
    if fmt == "csv":
        return parse_csv(data, target, missing=missing, task=task)
    if fmt == "npz":
        return parse_npz(data, missing=missing, task=task)
    if fmt == "images":
        return parse_image_zip(data)
    raise InvalidInput(f"unknown dataset format {fmt!r}; use csv, npz or images")


def schema_of(parsed: ParsedDataset) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "task": parsed.task,
        "rows": parsed.rows,
        "features": [
            {"name": n, "kind": k, **parsed.sequence_info.get(n, {})}
            for n, k in zip(parsed.feature_names, parsed.feature_kinds, strict=True)
        ],
        "classes": parsed.classes,
    }
    if parsed.image_shape is not None:
        channels, height, width = parsed.image_shape
        schema["image"] = {"channels": channels, "height": height, "width": width}
        if parsed.resized:
            schema["image"]["resized"] = parsed.resized
    return schema


def _numeric_profile(column: Array) -> dict[str, Any]:
    present = column[~np.isnan(column)]
    if present.size == 0:
        return {"count": 0, "missing": int(column.size)}
    counts, edges = np.histogram(present, bins=10)
    quantiles = np.quantile(present, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "count": int(present.size),
        "missing": int(column.size - present.size),
        "mean": float(present.mean()),
        "std": float(present.std()),
        "min": float(present.min()),
        "max": float(present.max()),
        "quantiles": {q: float(v) for q, v in zip(("p05", "p25", "p50", "p75", "p95"), quantiles, strict=True)},
        "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
    }


def profile_of(parsed: ParsedDataset) -> dict[str, Any]:
    """Per-feature statistics and the class distribution: the reference later drift checks compare to."""
    profile: dict[str, Any] = {}
    if parsed.image_shape is None:
        numeric = [n for n, k in zip(parsed.feature_names, parsed.feature_kinds, strict=True) if k == "numeric"]
        profile["features"] = {name: _numeric_profile(parsed.X[:, i]) for i, name in enumerate(numeric)}
        for j, name in enumerate(parsed.text_names):
            assert parsed.text is not None
            lengths = np.array([len(str(t).split()) for t in parsed.text[:, j]], dtype=np.float64)
            profile["features"][name] = {"count": int(lengths.size), "words": _numeric_profile(lengths)}
        for name, lengths in parsed.sequence_lengths.items():
            profile["features"][name] = {"count": int(lengths.size), "steps": _numeric_profile(lengths.astype(float))}
        for j, name in enumerate(parsed.categorical_names):
            assert parsed.categorical is not None
            values, counts = np.unique(parsed.categorical[:, j].astype(str), return_counts=True)
            order = np.argsort(-counts)[:10]
            profile["features"][name] = {
                "count": int(counts.sum()),
                "missing": int(counts[values == ""].sum()),
                "distinct": int(values.size),
                "top": {str(values[i]): int(counts[i]) for i in order},
            }
    else:
        channels = parsed.X.reshape(parsed.rows, parsed.image_shape[0], -1)
        profile["channels"] = [_numeric_profile(channels[:, c, :].ravel()) for c in range(parsed.image_shape[0])]
    if parsed.y is not None:
        if parsed.task == "classification":
            counts = np.bincount(parsed.y.astype(np.int64), minlength=len(parsed.classes))
            profile["class_distribution"] = {c: int(n) for c, n in zip(parsed.classes, counts, strict=True)}
        else:
            profile["target"] = _numeric_profile(parsed.y.astype(np.float64))
    return profile


def model_inputs(parsed: ParsedDataset, layout: Layout, rows: Array) -> dict[str, Array]:
    """The tensors a model trained on ``parsed`` gets for ``rows``, named as its inputs (``layout``)."""
    if layout.kind in ("image", "text"):
        assert layout.input is not None
        if layout.kind == "text":
            assert parsed.text is not None
            return {layout.input: parsed.text[rows, 0]}
        return {layout.input: parsed.X[rows]}
    tensors: dict[str, Array] = {}
    if layout.numeric_input is not None:
        tensors[layout.numeric_input] = parsed.X[rows].astype(np.float32)
    if layout.categorical_input is not None:
        assert parsed.categorical is not None
        tensors[layout.categorical_input] = parsed.categorical[rows]
    return tensors


def reference_of(
    parsed: ParsedDataset,
    layout: Layout,
    rows: Array | None = None,
    *,
    source: str,
    outputs: Array | None = None,
    seed: int = 0,
) -> Reference:
    """The drift reference of a model trained on ``rows`` of ``parsed`` (all rows when None): a sample of
    at most drift_reference.MAX_REFERENCE_ROWS of them as feature columns, and the evaluation outputs."""
    chosen = np.arange(parsed.rows) if rows is None else np.asarray(rows)
    sample = chosen[drift_reference.sample_rows(chosen.size, seed)]
    return drift_reference.build(
        layout, model_inputs(parsed, layout, sample), rows=int(chosen.size), source=source, outputs=outputs
    )


if __name__ == "__main__":  # the child of builtin_npz_in_child: the NPZ bytes on stdout
    sys.stdout.buffer.write(builtin_npz(sys.argv[1]))
