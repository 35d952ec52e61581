"""PyTorch trainers (run in the training child only). Preprocessing fitted on the training split is a
layer of the exported model, so clients send raw features or raw pixels."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from stratus.training.params import TrainParams
from stratus.types import Array

Report = Callable[[dict[str, Any]], None]


class Preprocess(nn.Module):
    """Impute NaN with the training mean, then standardise or min-max scale, per feature (or channel)."""

    fill: torch.Tensor
    offset: torch.Tensor
    scale: torch.Tensor

    def __init__(self, fill: Array, offset: Array, scale: Array, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("fill", torch.tensor(fill, dtype=torch.float32).reshape(shape))
        self.register_buffer("offset", torch.tensor(offset, dtype=torch.float32).reshape(shape))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.where(torch.isnan(x), self.fill, x)
        return (x - self.offset) / self.scale


def fit_preprocess(X: Array, params: TrainParams, image: bool) -> Preprocess:
    axes = (0, 2, 3) if image else (0,)
    shape = (1, X.shape[1], 1, 1) if image else (1, X.shape[1])
    fill = np.nanmean(X, axis=axes) if params.impute == "mean" else np.nanmedian(X, axis=axes)
    fill = np.nan_to_num(fill)
    if params.scaling == "standard":
        offset, scale = fill, np.nanstd(X, axis=axes)
    elif params.scaling == "minmax":
        offset, scale = np.nanmin(X, axis=axes), np.nanmax(X, axis=axes) - np.nanmin(X, axis=axes)
    else:
        offset, scale = np.zeros_like(fill), np.ones_like(fill)
    scale = np.where(np.nan_to_num(scale) > 1e-12, scale, 1.0)
    return Preprocess(fill, np.nan_to_num(offset), scale, shape)


class Classifier(nn.Module):
    """Wraps a network so the exported graph outputs both scores and the predicted label. For images it
    first resizes whatever size arrives to the training size, so clients may send any resolution."""

    def __init__(
        self, preprocess: Preprocess, body: nn.Module, classify: bool, resize: tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.body = body
        self.classify = classify
        self.resize = resize

    def forward(self, x: torch.Tensor) -> Any:
        if self.resize is not None:
            x = nn.functional.interpolate(x, size=self.resize, mode="bilinear", align_corners=False)
        out = self.body(self.preprocess(x))
        if self.classify:
            return out, out.argmax(dim=1)
        return out.squeeze(-1)


def mlp(features: int, outputs: int, hidden: list[int]) -> nn.Module:
    layers: list[nn.Module] = []
    width = features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, outputs))
    return nn.Sequential(*layers)


def cnn(shape: tuple[int, int, int], outputs: int, channels: list[int]) -> nn.Module:
    """Conv blocks, then a fixed average pool down to at most 4x4. Fixed, not adaptive: the exported
    graph takes images of any size (it resizes them first), and ONNX export needs static pool sizes."""
    layers: list[nn.Module] = []
    width, height, breadth = shape
    for i, size in enumerate(channels):
        layers += [nn.Conv2d(width, size, 3, padding=1), nn.ReLU()]
        if (i == len(channels) - 1 or height >= 16) and height >= 2 and breadth >= 2:
            layers.append(nn.MaxPool2d(2))
            height, breadth = height // 2, breadth // 2
        width = size
    kernel = (max(1, height // 4), max(1, breadth // 4))
    height, breadth = height // kernel[0], breadth // kernel[1]
    layers += [nn.AvgPool2d(kernel), nn.Flatten(), nn.Linear(width * height * breadth, 64), nn.ReLU()]
    layers.append(nn.Linear(64, outputs))
    return nn.Sequential(*layers)


def init_weights(module: nn.Module, scheme: str) -> None:
    if scheme == "default":
        return
    for layer in module.modules():
        if isinstance(layer, nn.Linear | nn.Conv2d):
            if scheme == "xavier":
                nn.init.xavier_uniform_(layer.weight)
            else:
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def augment(x: torch.Tensor, kinds: Sequence[str], generator: torch.Generator) -> torch.Tensor:
    """Training-time only: random horizontal flip, padded random crop, rotation up to 10 degrees."""
    if "flip" in kinds:
        flip = torch.rand(x.shape[0], generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if "crop" in kinds:
        padded = nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
        dy, dx = (int(v) for v in torch.randint(0, 3, (2,), generator=generator))
        x = padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]
    if "rotate" in kinds:
        angle = (torch.rand(x.shape[0], generator=generator) - 0.5) * (math.pi / 9)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [torch.stack([cos, -sin, torch.zeros_like(cos)], 1), torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1
        )
        grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        x = nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    return x


def _optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    if params.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=params.lr,
            momentum=params.momentum,
            nesterov=params.nesterov and params.momentum > 0,
            weight_decay=params.weight_decay,
        )
    return torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)


def _scheduler(optimizer: torch.optim.Optimizer, params: TrainParams) -> Any:
    if params.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=params.step_size, gamma=params.gamma)
    if params.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=params.epochs)
    if params.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=params.gamma, patience=2)
    return None


@dataclass
class TorchSetup:
    """A torch trainer's network (preprocessing fitted, weights initialised) and the tensors it trains on: what a
    one-process epoch loop and a data-parallel one (training/distributed.py) both start from."""

    model: nn.Module
    inputs: list[Array]
    labels: Array
    classify: bool
    augment: list[str]
    val_inputs: list[Array] | None = None
    val_labels: Array | None = None


def setup_torch(
    model_kind: str,
    X_train: Array,
    y_train: Array,
    X_val: Array | None,
    y_val: Array | None,
    *,
    task: str,
    classes: int,
    image_shape: tuple[int, int, int] | None,
    params: TrainParams,
) -> TorchSetup:
    torch.manual_seed(params.seed)
    classify = task == "classification"
    image = image_shape is not None
    preprocess = fit_preprocess(X_train, params, image)
    outputs = classes if classify else 1
    resize = None
    if image_shape is not None:
        side = params.image_size
        resize = (side, side) if side is not None else (image_shape[1], image_shape[2])
        image_shape = (image_shape[0], *resize)
    if model_kind == "cnn":
        assert image_shape is not None
        body = cnn(image_shape, outputs, params.channels)
    else:
        # logistic_regression here is DP-SGD's (training/privacy.py): softmax regression, one linear layer.
        hidden = [] if model_kind == "logistic_regression" else params.hidden
        body = mlp(int(np.prod(image_shape) if image_shape else X_train.shape[1]), outputs, hidden)
        if image:
            body = nn.Sequential(nn.Flatten(), body)
    init_weights(body, params.init)
    model = Classifier(preprocess, body, classify, resize)
    has_val = X_val is not None and y_val is not None and len(X_val) > 0
    return TorchSetup(
        model=model,
        inputs=[np.asarray(X_train, dtype=np.float32)],
        labels=np.asarray(y_train, dtype=np.int64 if classify else np.float32),
        classify=classify,
        augment=list(params.augment) if image else [],
        val_inputs=[np.asarray(X_val, dtype=np.float32)] if has_val else None,
        val_labels=np.asarray(y_val) if has_val else None,
    )


def train_torch(
    model_kind: str,
    X_train: Array,
    y_train: Array,
    X_val: Array | None,
    y_val: Array | None,
    *,
    task: str,
    classes: int,
    image_shape: tuple[int, int, int] | None,
    params: TrainParams,
    report: Report,
) -> nn.Module:
    setup = setup_torch(
        model_kind, X_train, y_train, X_val, y_val, task=task, classes=classes, image_shape=image_shape, params=params
    )
    generator = torch.Generator().manual_seed(params.seed)
    model, classify = setup.model, setup.classify
    loss_fn: nn.Module = nn.CrossEntropyLoss() if classify else nn.MSELoss()
    xs = torch.tensor(setup.inputs[0], dtype=torch.float32)
    ys = torch.from_numpy(setup.labels)

    def batch_loss(index: torch.Tensor) -> torch.Tensor:
        batch = xs[index]
        if setup.augment:
            # Augment the raw pixels: the preprocess is part of the model, as it is when serving.
            batch = augment(batch, setup.augment, generator)
        out = model(batch)
        loss: torch.Tensor = loss_fn(out[0] if classify else out, ys[index])
        return loss

    validate = None
    if setup.val_inputs is not None and setup.val_labels is not None:
        X_v, y_v = setup.val_inputs[0], setup.val_labels
        validate = (lambda: evaluate_score(model, X_v, y_v, classify), "accuracy" if classify else "neg_mse")
    run_epochs(model, len(xs), batch_loss, params, report, generator, validate)
    return model


Validation = tuple[Callable[[], float], str]


def run_epochs(
    model: nn.Module,
    rows: int,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    params: TrainParams,
    report: Report,
    generator: torch.Generator,
    validate: Validation | None = None,
) -> None:
    """The epoch loop every torch trainer shares: shuffled mini-batches, the optimizer and schedule from
    params, a progress event per epoch (loss, validation metric, ETA), early stopping on the validation
    metric with the best weights restored. Leaves the model in eval mode."""
    optimizer = _optimizer(model, params)
    scheduler = _scheduler(optimizer, params)
    best_state, best_score, stale = None, -math.inf, 0
    started = time.monotonic()
    for epoch in range(1, params.epochs + 1):
        model.train()
        order = torch.randperm(rows, generator=generator)
        total = 0.0
        for start in range(0, rows, params.batch_size):
            index = order[start : start + params.batch_size]
            optimizer.zero_grad()
            loss = batch_loss(index)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            optimizer.step()
            total += float(loss.detach()) * len(index)
        event: dict[str, Any] = {"event": "epoch", "epoch": epoch, "epochs": params.epochs, "loss": total / rows}
        if validate is not None:
            model.eval()
            score = validate[0]()
            event["val_metric"], event["val_metric_name"] = score, validate[1]
            if score > best_score:
                best_score, stale = score, 0
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
        if scheduler is not None:
            if params.schedule == "plateau":
                scheduler.step(-event.get("val_metric", -event["loss"]))
            else:
                scheduler.step()
        elapsed = time.monotonic() - started
        event["eta_s"] = elapsed / epoch * (params.epochs - epoch)
        event["lr"] = optimizer.param_groups[0]["lr"]
        report(event)
        if params.patience is not None and stale >= params.patience:
            report({"event": "log", "message": f"early stopping after epoch {epoch}: no gain for {stale} epochs"})
            break
    if best_state is not None and params.patience is not None:
        model.load_state_dict(best_state)
    model.eval()


def evaluate_score(model: nn.Module, X: Array, y: Array, classify: bool) -> float:
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor(X, dtype=torch.float32))
    if classify:
        return float((out[1].numpy() == y).mean())
    return -float(np.mean((out.numpy() - y) ** 2))


def predict(model: nn.Module, X: Array, classify: bool) -> Array:
    with torch.no_grad():
        out = model(torch.tensor(X, dtype=torch.float32))
    result: Array = out[1].numpy() if classify else out.numpy()
    return result
