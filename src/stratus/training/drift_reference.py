"""The drift reference of a model version: what its inputs looked like in training, per feature.

A reference is a sample of the training rows (at most ``MAX_REFERENCE_ROWS``, drawn without replacement)
turned into feature columns, plus the model's outputs at evaluation time. It is row-level user data, so it
is stored as a version file (``drift-reference.npz``) in the artifact store, sealed like every artifact,
never in the plain metadata DB.

The same ``features_of`` turns the reference's tensors and a window of logged request tensors into
feature columns, so both sides are measured alike:

- tabular models: one feature per column of the numeric input (named as in the dataset), one per column
  of the categorical input;
- image models (an input of shape [n, C, H, W]): each image's per-channel mean and standard deviation;
- text models (a BYTES input): each text's token count and out-of-vocabulary rate (the share of its
  words the reference never saw; in the reference itself, words no other reference text has).
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stratus.errors import InvalidInput
from stratus.types import Array

REFERENCE_FILE = "drift-reference.npz"
MAX_REFERENCE_ROWS = 5000
MAX_VOCABULARY = 50_000
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class Layout:
    """How a model's input tensors map to features. ``kind`` is tabular, image or text."""

    kind: str
    numeric_input: str | None = None
    numeric: list[str] = field(default_factory=list)
    categorical_input: str | None = None
    categorical: list[str] = field(default_factory=list)
    input: str | None = None  # the image or text input
    channels: int = 0
    output: str | None = None  # the output whose distribution prediction drift compares
    output_kind: str = "categorical"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Layout:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def feature_kinds(self) -> dict[str, str]:
        if self.kind == "image":
            return {f"channel{c}_{s}": "numeric" for c in range(self.channels) for s in ("mean", "std")}
        if self.kind == "text":
            return {"token_count": "numeric", "oov_rate": "numeric"}
        return {**{n: "numeric" for n in self.numeric}, **{n: "categorical" for n in self.categorical}}


def words(text: Any) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return [w.lower() for w in _WORD.findall(str(text))]


def _column_block(tensor: Array, width: int, what: str) -> Array:
    block = np.asarray(tensor)
    if block.ndim == 1 and width == 1:
        block = block[:, None]
    if block.ndim != 2 or block.shape[1] != width:
        raise InvalidInput(f"the {what} input has shape {list(block.shape)}; the reference expects [n, {width}]")
    return block


def features_of(
    layout: Layout, tensors: Mapping[str, Array], vocabulary: frozenset[str] | None = None
) -> dict[str, Array]:
    """Feature columns of a batch of input tensors. Without a vocabulary (the reference itself), a word is
    out of vocabulary when no other text of the batch has it."""
    if layout.kind == "image":
        assert layout.input is not None
        images = np.asarray(tensors[layout.input], dtype=np.float64)
        if images.ndim == 3:
            images = images[:, None]
        if images.ndim != 4 or images.shape[1] != layout.channels:
            raise InvalidInput(f"the image input has shape {list(images.shape)}; expected [n, {layout.channels}, h, w]")
        flat = images.reshape(images.shape[0], images.shape[1], -1)
        means, stds = flat.mean(axis=2), flat.std(axis=2)
        out: dict[str, Array] = {}
        for c in range(layout.channels):
            out[f"channel{c}_mean"], out[f"channel{c}_std"] = means[:, c], stds[:, c]
        return out
    if layout.kind == "text":
        assert layout.input is not None
        texts = [words(t) for t in np.asarray(tensors[layout.input], dtype=object).ravel()]
        if vocabulary is None:
            # Leave-one-out: how new a training text's words are to the rest of training, the fair
            # counterpart of how new a request's words are to all of it.
            document_frequency = Counter(w for t in texts for w in set(t))
            oov = [sum(document_frequency[w] == 1 for w in t) / len(t) if t else 0.0 for t in texts]
        else:
            oov = [sum(w not in vocabulary for w in t) / len(t) if t else 0.0 for t in texts]
        return {"token_count": np.array([len(t) for t in texts], dtype=np.float64), "oov_rate": np.array(oov)}
    out = {}
    if layout.numeric:
        assert layout.numeric_input is not None
        block = _column_block(tensors[layout.numeric_input], len(layout.numeric), "numeric")
        for i, name in enumerate(layout.numeric):
            out[name] = block[:, i].astype(np.float64)
    if layout.categorical:
        assert layout.categorical_input is not None
        block = _column_block(tensors[layout.categorical_input], len(layout.categorical), "categorical")
        for i, name in enumerate(layout.categorical):
            out[name] = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in block[:, i]])
    return out


@dataclass
class Reference:
    layout: Layout
    features: dict[str, Array]  # feature columns of the sampled rows
    rows: int  # rows of the data the sample stands for (the choice of test follows it)
    source: str  # "training split", "dataset NAME (whole)", "uploaded"
    outputs: Array | None = None  # evaluation-time outputs
    vocabulary: frozenset[str] | None = None

    def columns(self) -> dict[str, tuple[str, Array]]:
        kinds = self.layout.feature_kinds()
        return {name: (kinds[name], values) for name, values in self.features.items() if name in kinds}

    def to_bytes(self) -> bytes:
        meta = {"layout": self.layout.to_dict(), "rows": self.rows, "source": self.source}
        arrays: dict[str, Array] = {f"feature/{k}": v for k, v in self.features.items()}
        arrays["meta"] = np.array(json.dumps(meta))
        if self.outputs is not None:
            arrays["outputs"] = self.outputs
        if self.vocabulary is not None:
            arrays["vocabulary"] = np.array(sorted(self.vocabulary), dtype=str)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Reference:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(str(arrays.pop("meta")))
        vocabulary = arrays.pop("vocabulary", None)
        return cls(
            layout=Layout.from_dict(meta["layout"]),
            features={k.removeprefix("feature/"): v for k, v in arrays.items() if k.startswith("feature/")},
            rows=int(meta["rows"]),
            source=str(meta["source"]),
            outputs=arrays.get("outputs"),
            vocabulary=frozenset(vocabulary.tolist()) if vocabulary is not None else None,
        )


def sample_rows(total: int, seed: int = 0, limit: int = MAX_REFERENCE_ROWS) -> Array:
    """Row indices of a reference sample: all rows up to ``limit``, else a seeded draw without replacement."""
    if total <= limit:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=limit, replace=False))


def build(
    layout: Layout,
    tensors: Mapping[str, Array],
    *,
    rows: int,
    source: str,
    outputs: Array | None = None,
) -> Reference:
    """A reference from the model-ready tensors of the (sampled) training rows."""
    vocabulary = None
    if layout.kind == "text":
        assert layout.input is not None
        counts = Counter(w for t in np.asarray(tensors[layout.input], dtype=object).ravel() for w in set(words(t)))
        vocabulary = frozenset(w for w, _ in counts.most_common(MAX_VOCABULARY))
    return Reference(layout, features_of(layout, tensors), rows, source, outputs, vocabulary)


def output_values(layout: Layout, outputs: Sequence[Any] | Array) -> Array:
    values = np.asarray(outputs)
    if layout.output_kind == "categorical":
        return values.astype(str).ravel()
    return values.astype(np.float64).ravel()


def layout_for(schema: Mapping[str, Any], inputs: Sequence[str], outputs: Sequence[str]) -> Layout:
    """The layout of a model trained on a dataset of this schema (``schema_of``), from its input and output
    names: the trainers name them ``input`` (or ``numeric`` and ``categorical``, or ``text``)."""
    if not inputs:
        raise InvalidInput("the model has no inputs to compare with a reference")
    classify = schema.get("task") == "classification"
    output = ("label" if "label" in outputs else outputs[0]) if outputs else None
    common: dict[str, Any] = {"output": output, "output_kind": "categorical" if classify else "numeric"}
    kinds = [(f["name"], f["kind"]) for f in schema.get("features", [])]
    if "image" in schema:
        return Layout("image", input=inputs[0], channels=int(schema["image"]["channels"]), **common)
    if any(kind == "text" for _, kind in kinds):
        return Layout("text", input=inputs[0], **common)
    numeric = [n for n, k in kinds if k == "numeric"]
    categorical = [n for n, k in kinds if k == "categorical"]
    if categorical:
        return Layout(
            "tabular",
            numeric_input="numeric" if numeric else None,
            numeric=numeric,
            categorical_input="categorical",
            categorical=categorical,
            **common,
        )
    return Layout("tabular", numeric_input=inputs[0], numeric=numeric, **common)
