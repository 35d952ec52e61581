"""Training request: the trainer and its hyperparameters, each with a validated range."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stratus.errors import InvalidInput
from stratus.registry.names import NAME_PATTERN

#: The training graph a torch-trained version keeps (see training/graph.py), for pruning and distilling.
GRAPH_FILE = "training-graph.json"
WEIGHTS_FILE = "training-weights.npz"
SKLEARN_MODELS = ("linear_regression", "logistic_regression", "decision_tree", "random_forest", "svm")
TORCH_MODELS = ("mlp", "cnn", "text_classifier")
Trainer = Literal[
    "linear_regression",
    "logistic_regression",
    "decision_tree",
    "random_forest",
    "svm",
    "mlp",
    "cnn",
    "text_classifier",
    "fine_tune",
]


class TrainParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # data handling
    test_split: float = Field(default=0.25, gt=0.0, lt=0.9)
    validation_split: float = Field(default=0.1, ge=0.0, lt=0.5)
    scaling: Literal["standard", "minmax", "none"] = "standard"
    impute: Literal["mean", "median"] = "mean"
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    # torch
    epochs: int = Field(default=20, ge=1, le=1000)
    batch_size: int = Field(default=32, ge=1, le=4096)
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(default=1e-3, gt=0.0, le=10.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    schedule: Literal["none", "step", "cosine", "plateau"] = "none"
    step_size: int = Field(default=10, ge=1, le=1000)
    gamma: float = Field(default=0.5, gt=0.0, le=1.0)
    patience: int | None = Field(default=None, ge=1, le=1000, description="early stopping on validation")
    init: Literal["default", "xavier", "he"] = "default"
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    # Widths are bounded like every other number: a layer of 2**52 units would only fail late, in the job.
    hidden: list[Annotated[int, Field(ge=1, le=8192)]] = Field(default_factory=lambda: [64], max_length=8)
    channels: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [16, 32], min_length=1, max_length=4
    )
    augment: list[Literal["flip", "crop", "rotate"]] = Field(default_factory=list)
    embedding_dim: int = Field(default=64, ge=4, le=1024, description="text_classifier word vectors")
    vocab_size: int = Field(default=20_000, ge=100, le=500_000, description="text_classifier vocabulary")
    max_length: int = Field(default=128, ge=4, le=4096, description="text_classifier tokens per text")
    image_size: int | None = Field(
        default=None, ge=4, le=1024, description="train on images resized to this square size (inside the model)"
    )
    # scikit-learn
    C: float = Field(default=1.0, gt=0.0, le=1e6)
    max_iter: int = Field(default=1000, ge=1, le=100_000)
    max_depth: int | None = Field(default=None, ge=1, le=1000)
    n_estimators: int = Field(default=100, ge=1, le=5000)
    kernel: Literal["linear", "rbf", "poly"] = "rbf"


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(pattern=NAME_PATTERN, max_length=64)
    model: Trainer
    name: str | None = Field(
        default=None, pattern=NAME_PATTERN, max_length=64, description="registered model name; default: DATASET-MODEL"
    )
    params: TrainParams = Field(default_factory=TrainParams)
    timeout_s: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    retries: int = Field(default=0, ge=0, le=10)
    # Data-parallel training on the Ray cluster (training/distributed.py): None runs the usual one-process child.
    workers: int | None = Field(default=None, ge=1, le=256, description="Ray Train workers (torch trainers only)")
    cpus_per_worker: float = Field(default=1.0, gt=0.0, le=256.0, description="Ray CPUs each worker asks for")
    memory_mb_per_worker: int = Field(
        default=0, ge=0, le=4_194_304, description="memory each worker asks for (0: none)"
    )


def parse_train_request(raw: dict[str, Any]) -> TrainRequest:
    try:
        return TrainRequest.model_validate(raw)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"invalid training request: {detail}") from None


def check_applicable(request: TrainRequest, dataset: dict[str, Any]) -> None:
    """Refuse at submit time what cannot train, with the reason."""
    if request.workers is not None and request.model not in TORCH_MODELS:
        raise InvalidInput(
            f"{request.model} cannot train data-parallel (workers): only the torch trainers can "
            f"({', '.join(TORCH_MODELS)}); leave workers unset for scikit-learn trainers"
        )
    task = dataset["task"]
    image = "image" in dataset["schema"]
    kinds = [f["kind"] for f in dataset["schema"]["features"]]
    if request.model in ("text_classifier", "fine_tune"):
        if kinds.count("text") != 1 or task != "classification":
            raise InvalidInput(f"{request.model} needs a classification dataset with exactly one free-text column")
        if request.model == "fine_tune" and request.params.max_length > 512:
            raise InvalidInput("fine_tune reads at most 512 tokens per text (MiniLM's positions): max_length <= 512")
        return
    if "text" in kinds:
        raise InvalidInput(f"dataset {dataset['name']!r} has a free-text column: use the text_classifier trainer")
    if task == "unsupervised":
        raise InvalidInput(f"dataset {dataset['name']!r} has no target; supervised trainers need one")
    if request.model == "cnn" and not image:
        raise InvalidInput("the cnn trainer needs an image dataset (an image-folder ZIP, or an NPZ with 3-4-D X)")
    if request.model != "cnn" and image and request.model in SKLEARN_MODELS:
        raise InvalidInput(f"{request.model} trains on tabular data; use cnn or mlp for images")
    if request.model == "linear_regression" and task != "regression":
        raise InvalidInput("linear_regression needs a regression target; use logistic_regression to classify")
    if request.model == "logistic_regression" and task != "classification":
        raise InvalidInput("logistic_regression needs class labels; use linear_regression for a numeric target")
