"""Pipelines: a registered model that is a DAG of steps, served and batched like any model.

Examples: tokenizer -> encoder -> mean-pool -> L2-normalize for a sentence embedder, or several
classifiers whose probabilities are averaged or whose labels are voted. The spec is JSON stored as the
version's artifact; the files it names (ONNX graphs, tokenizer.json) are further artifacts of the same
version, and ``model`` steps may use other registered versions. Nothing here imports torch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import numpy as np
import onnxruntime as ort
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stratus.errors import InvalidInput
from stratus.runtime.session import (
    check_feeds,
    check_output_names,
    load_session,
    run_session,
    warm_up_feeds,
)
from stratus.types import V2_TO_NUMPY, Signature, Tensor, TensorSpec

# Tokenizers' own thread pool spins on the same cores ONNX Runtime needs; batches here are small enough
# to tokenize on one thread. Measured: minilm at concurrency 32 went from ~450 to ~510 requests/s.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenizeStep(_Step):
    """Text -> input_ids, attention_mask, token_type_ids (padded to the longest row) and token_count."""

    op: Literal["tokenize"]
    file: str
    input: str
    max_length: int = Field(default=256, ge=1, le=8192)
    prefix: str = ""


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    version: int = Field(ge=1)


class OnnxStep(_Step):
    """Run an ONNX graph: a file of this version, or another registered version."""

    op: Literal["onnx"]
    file: str | None = None
    model: ModelRef | None = None
    inputs: dict[str, str] = Field(description="graph input name -> pipeline tensor name")
    outputs: dict[str, str] = Field(description="graph output name -> pipeline tensor name")


class MeanPoolStep(_Step):
    op: Literal["mean_pool"]
    input: str
    mask: str
    output: str


class L2NormalizeStep(_Step):
    op: Literal["l2_normalize"]
    input: str
    output: str


class AverageStep(_Step):
    op: Literal["average"]
    inputs: list[str] = Field(min_length=1)
    output: str


class VoteStep(_Step):
    """Majority vote over label tensors; ties go to the smallest label."""

    op: Literal["vote"]
    inputs: list[str] = Field(min_length=1)
    output: str


class ArgmaxStep(_Step):
    op: Literal["argmax"]
    input: str
    output: str


Step = Annotated[
    TokenizeStep | OnnxStep | MeanPoolStep | L2NormalizeStep | AverageStep | VoteStep | ArgmaxStep,
    Field(discriminator="op"),
]


class TensorDecl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    datatype: str
    shape: list[int]

    @field_validator("datatype")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in V2_TO_NUMPY:
            raise ValueError(f"unknown datatype {value!r}")
        return value


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["pipeline"]
    inputs: list[TensorDecl] = Field(min_length=1)
    outputs: list[TensorDecl] = Field(min_length=1)
    steps: list[Step] = Field(min_length=1)

    @classmethod
    def parse(cls, data: bytes) -> PipelineSpec:
        try:
            spec = cls.model_validate(orjson.loads(data))
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"the pipeline spec is not valid JSON: {exc}") from None
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise InvalidInput(f"invalid pipeline spec: {detail}") from None
        spec._check_wiring()
        return spec

    def signature(self) -> Signature:
        return Signature(
            inputs=tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in self.inputs),
            outputs=tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in self.outputs),
        )

    def files(self) -> set[str]:
        names = set()
        for step in self.steps:
            file = getattr(step, "file", None)
            if file is not None:
                if not _FILE_NAME.fullmatch(file):
                    raise InvalidInput(f"invalid file name {file!r} in the pipeline spec")
                names.add(file)
        return names

    def model_refs(self) -> list[ModelRef]:
        return [s.model for s in self.steps if isinstance(s, OnnxStep) and s.model is not None]

    def _check_wiring(self) -> None:
        """Every step reads tensors that exist by then; every declared output is produced."""
        known = {t.name for t in self.inputs}
        for index, step in enumerate(self.steps):
            reads, writes = _io_of(step)
            missing = [name for name in reads if name not in known]
            if missing:
                raise InvalidInput(f"pipeline step {index} ({step.op}) reads {missing} before anything produces it")
            if isinstance(step, OnnxStep) and (step.file is None) == (step.model is None):
                raise InvalidInput(f"pipeline step {index} (onnx) needs exactly one of 'file' or 'model'")
            known.update(writes)
        absent = [t.name for t in self.outputs if t.name not in known]
        if absent:
            raise InvalidInput(f"the pipeline declares output(s) {absent} that no step produces")
        self.files()


def _io_of(step: Any) -> tuple[list[str], list[str]]:
    if isinstance(step, TokenizeStep):
        p = step.prefix
        return [step.input], [f"{p}input_ids", f"{p}attention_mask", f"{p}token_type_ids", f"{p}token_count"]
    if isinstance(step, OnnxStep):
        return list(step.inputs.values()), list(step.outputs.values())
    if isinstance(step, MeanPoolStep):
        return [step.input, step.mask], [step.output]
    if isinstance(step, AverageStep | VoteStep):
        return list(step.inputs), [step.output]
    return [step.input], [step.output]


FileFetcher = Callable[[str], bytes]
RefFetcher = Callable[[ModelRef], bytes]


class PipelineRunner:
    """Runs a PipelineSpec. Same interface as ModelRunner, so the pool and batcher treat it alike."""

    def __init__(
        self,
        spec: PipelineSpec,
        fetch_file: FileFetcher,
        fetch_ref: RefFetcher,
        *,
        threads: int,
    ) -> None:
        """``fetch_file`` gives a file's bytes (tokenizers, ONNX files); ``fetch_ref`` another registered
        version's model."""
        from tokenizers import Tokenizer

        self.spec = spec
        self.signature = spec.signature()
        self.size_bytes = 0
        self._tokenizers: dict[int, Any] = {}
        self._sessions: dict[int, ort.InferenceSession] = {}
        for index, step in enumerate(spec.steps):
            if isinstance(step, TokenizeStep):
                data = fetch_file(step.file)
                try:
                    tokenizer = Tokenizer.from_str(data.decode("utf-8"))
                except Exception as exc:
                    raise InvalidInput(f"tokenizer file {step.file!r} cannot be loaded: {exc}") from None
                padding = tokenizer.padding or {}
                tokenizer.no_padding()
                # Pad to the longest row of each batch, never to a fixed length: short texts stay cheap.
                tokenizer.enable_padding(pad_id=padding.get("pad_id", 0), pad_token=padding.get("pad_token", "[PAD]"))
                tokenizer.enable_truncation(max_length=step.max_length)
                self._tokenizers[index] = tokenizer
                self.size_bytes += len(data)
            elif isinstance(step, OnnxStep):
                if step.file is not None:
                    model = fetch_file(step.file)
                else:
                    assert step.model is not None  # the spec's wiring check guarantees one of the two
                    model = fetch_ref(step.model)
                self._sessions[index] = load_session(model, threads)
                self.size_bytes += len(model)

    def check_inputs(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return check_feeds(self.signature, inputs)

    def check_outputs(self, outputs: list[str] | None) -> list[str]:
        return check_output_names(self.signature, outputs)

    def run_checked(self, feeds: dict[str, Tensor], outputs: list[str] | None = None) -> dict[str, Tensor]:
        env: dict[str, Tensor] = dict(feeds)
        for index, step in enumerate(self.spec.steps):
            self._apply(index, step, env)
        names = outputs or self.signature.output_names()
        return {name: env[name] for name in names}

    def feeds_of(self, feeds: dict[str, Tensor], onnx_file: str) -> dict[str, Tensor]:
        """What the ONNX step that runs ``onnx_file`` is given for these pipeline inputs (compression
        calibrates on it)."""
        env: dict[str, Tensor] = dict(self.check_inputs(feeds))
        for index, step in enumerate(self.spec.steps):
            if isinstance(step, OnnxStep) and step.file == onnx_file:
                return {graph_name: env[name] for graph_name, name in step.inputs.items()}
            self._apply(index, step, env)
        raise KeyError(f"the pipeline has no ONNX step running {onnx_file!r}")

    def warm_up(self) -> None:
        self.run_checked(self.check_inputs(warm_up_feeds(self.signature)))

    def _apply(self, index: int, step: Any, env: dict[str, Tensor]) -> None:
        if isinstance(step, TokenizeStep):
            encodings = self._tokenizers[index].encode_batch([str(t) for t in env[step.input].ravel()])
            p = step.prefix
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            env[f"{p}input_ids"] = ids
            env[f"{p}attention_mask"] = mask
            env[f"{p}token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
            env[f"{p}token_count"] = mask.sum(axis=1)
        elif isinstance(step, OnnxStep):
            names = list(step.outputs)
            results = run_session(self._sessions[index], names, {k: env[v] for k, v in step.inputs.items()})
            for graph_name, result in zip(names, results, strict=True):
                env[step.outputs[graph_name]] = result
        elif isinstance(step, MeanPoolStep):
            mask = env[step.mask][..., None].astype(np.float32)
            total = (env[step.input] * mask).sum(axis=1)
            env[step.output] = (total / np.clip(mask.sum(axis=1), 1e-9, None)).astype(np.float32)
        elif isinstance(step, L2NormalizeStep):
            x = env[step.input]
            env[step.output] = (x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)).astype(x.dtype)
        elif isinstance(step, AverageStep):
            env[step.output] = np.mean([env[n] for n in step.inputs], axis=0).astype(env[step.inputs[0]].dtype)
        elif isinstance(step, VoteStep):
            labels = np.stack([env[n].astype(np.int64) for n in step.inputs], axis=-1)
            counts = np.apply_along_axis(np.bincount, -1, labels, minlength=int(labels.max()) + 1)
            env[step.output] = counts.argmax(axis=-1).astype(np.int64)
        elif isinstance(step, ArgmaxStep):
            env[step.output] = env[step.input].argmax(axis=-1).astype(np.int64)
