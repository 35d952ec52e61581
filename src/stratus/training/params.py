"""Training request: the trainer and its hyperparameters, each with a validated range."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stratus.errors import InvalidInput
from stratus.registry.names import NAME_PATTERN

#: The training graph a torch-trained version keeps (see training/graph.py), for pruning and distilling.
GRAPH_FILE = "training-graph.json"
WEIGHTS_FILE = "training-weights.npz"
#: The longest numeric sequence the sequence trainers accept by default (settings.sequence_max_length).
DEFAULT_SEQUENCE_MAX_LENGTH = 1024
SKLEARN_MODELS = ("linear_regression", "logistic_regression", "decision_tree", "random_forest", "svm")
TORCH_MODELS = ("mlp", "cnn", "text_classifier")
#: The trainers DP-SGD can train (training/privacy.py): logistic_regression then trains as a torch linear model.
#: Not text_classifier: its vocabulary is built from the training text outside any privacy budget.
DP_MODELS = ("logistic_regression", "mlp", "cnn")
#: DP-SGD's logistic regression trains with this lr unless one is given (docs/privacy.md).
DP_LOGISTIC_LR = 0.05
#: Sequence trainers (training/sequence_trainers.py): text or numeric sequences, their own epoch loop, no workers.
SEQUENCE_MODELS = ("rnn", "transformer")
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
    "rnn",
    "transformer",
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
    # rnn and transformer (training/sequence_models.py)
    rnn_cell: Literal["lstm", "gru"] = "lstm"
    bidirectional: bool = False
    hidden_size: int = Field(default=64, ge=4, le=2048, description="rnn state / transformer feed-forward width")
    num_layers: int = Field(default=1, ge=1, le=8, description="rnn or transformer layers")
    heads: int = Field(default=4, ge=1, le=32, description="transformer attention heads (divide embedding_dim)")
    dropout: float = Field(default=0.1, ge=0.0, lt=0.9, description="rnn and transformer dropout")
    token_dropout: float = Field(default=0.1, ge=0.0, le=0.5, description="rnn/transformer text: words made [UNK]")
    image_size: int | None = Field(
        default=None, ge=4, le=1024, description="train on images resized to this square size (inside the model)"
    )
    # scikit-learn
    C: float = Field(default=1.0, gt=0.0, le=1e6)
    max_iter: int = Field(default=1000, ge=1, le=100_000)
    max_depth: int | None = Field(default=None, ge=1, le=1000)
    n_estimators: int = Field(default=100, ge=1, le=5000)
    kernel: Literal["linear", "rbf", "poly"] = "rbf"
    # differential privacy (DP-SGD, docs/privacy.md): the budget, and each example's gradient norm bound
    dp_epsilon: float | None = Field(default=None, gt=0.0, le=100.0, description="DP-SGD privacy budget")
    dp_delta: float | None = Field(default=None, gt=0.0, lt=0.01, description="DP-SGD delta (default 1e-5)")
    dp_max_grad_norm: float = Field(default=1.0, gt=0.0, le=1000.0, description="DP-SGD per-example clipping")

    @model_validator(mode="after")
    def _dp_pair(self) -> TrainParams:
        if self.dp_delta is not None and self.dp_epsilon is None:
            raise ValueError("dp_delta is the delta of a DP-SGD budget: give dp_epsilon too")
        if self.dp_epsilon is not None and self.dp_delta is None:
            self.dp_delta = 1e-5
        return self


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

    @model_validator(mode="after")
    def _dp_logistic_lr(self) -> TrainRequest:
        # DP-SGD's logistic regression (one linear layer, noisy clipped gradients) needs larger steps than the
        # torch trainers' default lr; it is set here, so the version's params say what it trained with.
        dp_logistic = self.params.dp_epsilon is not None and self.model == "logistic_regression"
        if dp_logistic and "lr" not in self.params.model_fields_set:
            self.params.lr = DP_LOGISTIC_LR
        return self


def parse_train_request(raw: dict[str, Any]) -> TrainRequest:
    try:
        return TrainRequest.model_validate(raw)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"invalid training request: {detail}") from None


def check_applicable(
    request: TrainRequest, dataset: dict[str, Any], sequence_max_length: int = DEFAULT_SEQUENCE_MAX_LENGTH
) -> None:
    """Refuse at submit time what cannot train, with the reason."""
    if request.workers is not None and request.model not in TORCH_MODELS:
        raise InvalidInput(
            f"{request.model} cannot train data-parallel (workers): only the torch trainers can "
            f"({', '.join(TORCH_MODELS)}); leave workers unset for scikit-learn trainers"
        )
    if request.params.dp_epsilon is not None:
        check_private(request, dataset)
    if request.model in SEQUENCE_MODELS:
        from stratus.training.sequence_data import check_sequence_request

        params = request.params
        check_sequence_request(
            request.model, dataset, sequence_max_length, embedding_dim=params.embedding_dim, heads=params.heads
        )
        return
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
    if "sequence" in kinds:
        raise InvalidInput(f"dataset {dataset['name']!r} has a sequence column: use the rnn or transformer trainer")
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


def check_private(request: TrainRequest, dataset: dict[str, Any]) -> None:
    """What DP-SGD cannot train with its guarantee intact is refused at submit, with the reason."""
    params = request.params
    if request.model not in DP_MODELS:
        raise InvalidInput(
            f"{request.model} cannot train with differential privacy (dp_epsilon): DP-SGD trains {', '.join(DP_MODELS)}"
        )
    if request.workers is not None:
        raise InvalidInput("differential privacy (dp_epsilon) trains in one process: leave workers unset")
    if params.patience is not None or params.schedule == "plateau":
        # Both pick weights or steps by the validation rows or the un-noised loss, outside the budget.
        raise InvalidInput("differential privacy (dp_epsilon) cannot use patience or the plateau schedule")
    assert params.dp_delta is not None
    rows = int(dataset["rows"])
    if params.dp_delta >= 1 / rows:
        raise InvalidInput(
            f"dp_delta {params.dp_delta} is not below 1/rows ({rows} rows): a delta that large allows "
            "publishing a row outright; use a smaller one (1e-5 is usual)"
        )
