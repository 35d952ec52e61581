"""Differential privacy (docs/privacy.md), in the training child and federated clients only (torch, Opacus).

Central training: DP-SGD with Opacus (per-sample gradients clipped to ``dp_max_grad_norm``, Gaussian noise,
Poisson-sampled batches). The noise multiplier is the smallest that keeps the planned steps within
(``dp_epsilon``, ``dp_delta``) by Opacus's RDP accountant; training stops before any step that would take the
accountant's epsilon past the budget. The epsilon stored with the version is the accountant's, after the last
step taken.

Federated clients: ``client_dp_mods`` returns the Flower mods a client runs with: Flower's ``LocalDpMod`` clips
the client's update and adds Gaussian noise each round, with a noise multiplier the same accountant chose for the
whole run (``rounds`` releases of the clipped update), and a mod around it that refuses a round past the budget
and tells the server the epsilon spent so far.
"""

from __future__ import annotations

import functools
import math
import secrets
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from stratus.errors import InvalidInput
from stratus.training.params import TrainParams
from stratus.training.torch_trainers import (
    TorchSetup,
    _optimizer,
    _scheduler,
    augment,
    evaluate_score,
    setup_torch,
)
from stratus.types import Array

Report = Callable[[dict[str, Any]], None]
#: Opacus's Rényi DP accountant: what every budget here is measured with.
ACCOUNTANT = "rdp"
#: The Rényi orders the accountant converts over: Opacus's defaults (1.1 to 63) and larger ones, without which no
#: noise reaches an epsilon below log(1/delta)/62 (about 0.19 at delta 1e-5). Up to 476: an order's cost grows
#: with it, and 476 still allows an epsilon of about 0.03 at delta 1e-5.
ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [int(64 * 1.25**k) for k in range(1, 10)]


def noise_multiplier_for(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier (noise std / clipping norm) whose ``steps`` Gaussian steps at ``sample_rate``
    stay within (epsilon, delta), by Opacus's binary search over its RDP accountant (to 0.01 in epsilon)."""
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with quiet_opacus():
            sigma = get_noise_multiplier(
                target_epsilon=epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=ACCOUNTANT,
                alphas=ALPHAS,
            )
    except ValueError:  # Opacus gives up past a noise multiplier of 1e6
        raise InvalidInput(
            f"a privacy budget of epsilon {epsilon} (delta {delta}) is too small for {steps} steps: "
            "ask for a larger epsilon or fewer epochs/rounds"
        ) from None
    return float(sigma)


@functools.lru_cache(maxsize=64)
def _step_rdp(noise_multiplier: float, sample_rate: float) -> Any:
    """One step's Rényi divergence at each of ALPHAS (the accountant multiplies it by its steps)."""
    from opacus.accountants.analysis.rdp import compute_rdp

    return compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=ALPHAS)


class Budget:
    """Opacus's RDP accountant against a budget: the epsilon spent so far, and whether one more step fits."""

    def __init__(self, epsilon: float, delta: float, accountant: Any | None = None) -> None:
        from opacus.accountants import RDPAccountant

        self.epsilon_budget = epsilon
        self.delta = delta
        self.accountant = accountant if accountant is not None else RDPAccountant()

    @property
    def steps(self) -> int:
        return sum(int(entry[2]) for entry in self.accountant.history)

    def spent(self) -> float:
        if not self.accountant.history:
            return 0.0
        with quiet_opacus():
            return float(self.accountant.get_epsilon(delta=self.delta, alphas=ALPHAS))

    def fits(self, noise_multiplier: float, sample_rate: float) -> bool:
        """Whether one more step keeps the accountant's epsilon within the budget. The same computation as the
        accountant's get_epsilon (its history's Rényi divergences summed, then converted at delta), with each
        (noise, rate)'s per-step divergences computed once: asked before every step, it must be cheap."""
        from opacus.accountants.analysis.rdp import get_privacy_spent

        history = [*self.accountant.history, (noise_multiplier, sample_rate, 1)]
        rdp = sum(_step_rdp(float(nm), float(q)) * int(n) for nm, q, n in history)
        with quiet_opacus():
            epsilon, _ = get_privacy_spent(orders=ALPHAS, rdp=rdp, delta=self.delta)
        return float(epsilon) <= self.epsilon_budget

    def step(self, noise_multiplier: float, sample_rate: float) -> None:
        self.accountant.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)


@contextmanager
def quiet_opacus() -> Iterator[None]:
    """Opacus's warnings that say nothing about this run: its secure_mode needs torchcsprng, which no torch 2.13
    build has (the noise comes from a secretly seeded generator instead, see secret_generator), and its per-sample
    hooks on a first layer whose input needs no gradient, and the accountant's note that a larger order might give
    a tighter bound."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        # Early in a run (or at a huge epsilon) the best order can be the largest (smallest) one: the epsilon is then
        # a looser bound, never a wrong one.
        warnings.filterwarnings("ignore", message="Optimal order is the (largest|smallest) alpha")
        yield


def secret_generator() -> torch.Generator:
    """The source of a run's noise and batch sampling, seeded from the OS's CSPRNG and never recorded. Not the job's
    seed: it is stored with the version, and noise drawn from a known seed could be subtracted again (and a known
    sampling gives up the privacy that sampling adds). So a DP run is not reproducible from its seed."""
    return torch.Generator().manual_seed(secrets.randbits(63))


def train_private(
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
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a torch trainer's network with DP-SGD. Returns the model (eval mode, Opacus's hooks removed) and the
    privacy record kept with the version's metrics."""
    setup = setup_torch(
        model_kind, X_train, y_train, X_val, y_val, task=task, classes=classes, image_shape=image_shape, params=params
    )
    with quiet_opacus():
        return _train(setup, params, report)


def _train(setup: TorchSetup, params: TrainParams, report: Report) -> tuple[nn.Module, dict[str, Any]]:
    from opacus import PrivacyEngine

    assert params.dp_epsilon is not None and params.dp_delta is not None
    model, classify = setup.model, setup.classify
    preprocess: Any = getattr(model, "preprocess", None)
    if params.scaling == "none" and preprocess is not None:
        # Without scaling, nothing computed from the rows outside DP-SGD goes into the model: missing values are
        # filled with 0 rather than the training mean (docs/privacy.md).
        preprocess.fill.zero_()
    xs = torch.tensor(setup.inputs[0], dtype=torch.float32)
    ys = torch.from_numpy(setup.labels)
    rows = len(xs)
    loss_fn: nn.Module = nn.CrossEntropyLoss() if classify else nn.MSELoss()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.arange(rows)),
        batch_size=min(params.batch_size, rows),
        generator=secret_generator(),
    )
    sample_rate = 1 / len(loader)  # Opacus's Poisson sampling: each row joins a step with this probability
    planned = params.epochs * len(loader)
    sigma = noise_multiplier_for(params.dp_epsilon, params.dp_delta, sample_rate, planned)
    engine = PrivacyEngine(accountant=ACCOUNTANT)
    optimizer = _optimizer(model, params)
    private_model, private_optimizer, private_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=sigma,
        max_grad_norm=params.dp_max_grad_norm,
        poisson_sampling=True,
        noise_generator=secret_generator(),
    )
    scheduler = _scheduler(optimizer, params)
    budget = Budget(params.dp_epsilon, params.dp_delta, engine.accountant)
    report(
        {
            "event": "log",
            "message": f"DP-SGD: noise multiplier {sigma:.4f}, clipping {params.dp_max_grad_norm}, "
            f"sample rate {sample_rate:.4f}, {planned} steps planned for epsilon {params.dp_epsilon}",
        }
    )

    augmenting = torch.Generator().manual_seed(params.seed)  # augmentation is per example: DP-SGD bounds it too

    def batch_loss(index: torch.Tensor) -> torch.Tensor:
        batch = xs[index]
        if setup.augment and len(index) > 0:
            batch = augment(batch, setup.augment, augmenting)
        out = private_model(batch)
        scores: torch.Tensor = out[0] if classify else out
        if len(index) == 0:  # Poisson sampling can draw no row: the step still adds its noise
            return scores.sum() * 0.0
        loss: torch.Tensor = loss_fn(scores, ys[index])
        return loss

    started, spent_out = time.monotonic(), False
    for epoch in range(1, params.epochs + 1):
        private_model.train()
        total, seen = 0.0, 0
        for (index,) in private_loader:
            if not budget.fits(sigma, sample_rate):
                spent_out = True
                break
            private_optimizer.zero_grad()
            loss = batch_loss(index)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            private_optimizer.step()  # the engine's hook counts the step in the accountant
            total, seen = total + float(loss.detach()) * len(index), seen + len(index)
        event: dict[str, Any] = {
            "event": "epoch",
            "epoch": epoch,
            "epochs": params.epochs,
            "loss": total / max(1, seen),
            "dp_epsilon": budget.spent(),
        }
        if setup.val_inputs is not None and setup.val_labels is not None:
            model.eval()
            event["val_metric"] = evaluate_score(model, setup.val_inputs[0], setup.val_labels, classify)
            event["val_metric_name"] = "accuracy" if classify else "neg_mse"
        if scheduler is not None:
            scheduler.step()
        event["eta_s"] = (time.monotonic() - started) / epoch * (params.epochs - epoch)
        event["lr"] = optimizer.param_groups[0]["lr"]
        report(event)
        if spent_out:
            report({"event": "log", "message": f"privacy budget spent: stopped in epoch {epoch}"})
            break
    private_model._close()  # removes Opacus's hooks, so the export traces the plain network
    model.eval()
    privacy = {
        "mechanism": "DP-SGD (Opacus)",
        "accountant": ACCOUNTANT,
        "epsilon": budget.spent(),
        "epsilon_budget": params.dp_epsilon,
        "delta": params.dp_delta,
        "noise_multiplier": sigma,
        "max_grad_norm": params.dp_max_grad_norm,
        "sample_rate": sample_rate,
        "steps": budget.steps,
        "steps_planned": planned,
    }
    return model, privacy


class FederatedBudget:
    """A federated client's budget over a run's rounds: every round releases the client's update, clipped to
    ``clipping_norm`` and noised, so ``rounds`` Gaussian releases (sample rate 1) must stay within (epsilon, delta)
    by the RDP accountant. The sensitivity is twice the clipping norm: any two local datasets give updates at most
    that far apart, so the guarantee covers the client's whole data, against the server and whoever sees an update.
    The server can build the same object from the job's settings to report the epsilon spent after N rounds."""

    def __init__(self, epsilon: float, delta: float, rounds: int, clipping_norm: float = 1.0) -> None:
        if not (epsilon > 0 and 0 < delta < 1 and rounds >= 1 and clipping_norm > 0):
            raise InvalidInput("a federated privacy budget needs epsilon > 0, 0 < delta < 1, rounds >= 1, clipping > 0")
        self.epsilon, self.delta, self.rounds, self.clipping_norm = epsilon, delta, rounds, clipping_norm
        self.sensitivity = 2 * clipping_norm
        self.noise_multiplier = noise_multiplier_for(epsilon, delta, 1.0, rounds)
        self.budget = Budget(epsilon, delta)

    @property
    def noise_std(self) -> float:
        return self.noise_multiplier * self.sensitivity

    @property
    def rounds_done(self) -> int:
        return self.budget.steps

    def spent(self) -> float:
        return self.budget.spent()

    def spent_after(self, rounds: int) -> float:
        """The accountant's epsilon after ``rounds`` releases at this noise (what the server reports)."""
        probe = Budget(self.epsilon, self.delta)
        for _ in range(rounds):
            probe.step(self.noise_multiplier, 1.0)
        return probe.spent()

    def take_round(self) -> bool:
        """Count one release, if it fits the budget."""
        if not self.budget.fits(self.noise_multiplier, 1.0):
            return False
        self.budget.step(self.noise_multiplier, 1.0)
        return True


class LocalDpBudgetMod:
    """A Flower client mod: each training round's update goes through Flower's ``LocalDpMod`` (clip the update to
    the clipping norm, add Gaussian noise), its noise set to the standard deviation the RDP accountant chose for the
    whole run; a round past the budget is refused (an error reply: the client drops out of that round, the job
    goes on), and each reply's metrics carry ``dp_epsilon``, the accountant's epsilon spent so far.

    ``LocalDpMod`` takes a per-round (epsilon, delta) and derives its noise by the classic Gaussian-mechanism formula,
    std = sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon; the pair given to it is chosen so that std is the
    accountant's. Only ``train`` fits are noised: the federation's preprocessing phases (``scale``, ``moments``)
    return statistics, not an update (docs/privacy.md says what that leaves outside the budget)."""

    def __init__(self, budget: FederatedBudget) -> None:
        from flwr.client.mod import LocalDpMod

        self.budget = budget
        per_round_delta = budget.delta
        per_round_epsilon = math.sqrt(2 * math.log(1.25 / per_round_delta)) / budget.noise_multiplier
        self.local_dp = LocalDpMod(budget.clipping_norm, budget.sensitivity, per_round_epsilon, per_round_delta)

    def __call__(self, msg: Any, ctxt: Any, call_next: Callable[[Any, Any], Any]) -> Any:
        from flwr.app import Error, Message, MessageType
        from flwr.common.constant import ErrorCode
        from flwr.compat.common import recorddict_compat as compat

        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)
        fit_ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        if str(fit_ins.config.get("phase", "train")) != "train":
            return call_next(msg, ctxt)
        if not self.budget.take_round():
            reason = (
                f"privacy budget spent: epsilon {self.budget.spent():.4f} of {self.budget.epsilon} after "
                f"{self.budget.rounds_done} rounds; this client trains no further round"
            )
            return Message(Error(ErrorCode.MOD_FAILED_PRECONDITION, reason), reply_to=msg)
        reply = self.local_dp(msg, ctxt, call_next)
        if reply.has_error():
            return reply
        fit_res = compat.recorddict_to_fitres(reply.content, keep_input=True)
        fit_res.metrics["dp_epsilon"] = self.budget.spent()
        reply.content = compat.fitres_to_recorddict(fit_res, keep_input=True)
        return reply


def client_dp_mods(epsilon: float, delta: float, rounds: int, clipping_norm: float = 1.0) -> list[Any]:
    """The mods a federated client runs with for a (epsilon, delta) budget over ``rounds`` rounds (put them inside
    the SecAgg+ mod, so the masked update is the noised one)."""
    return [LocalDpBudgetMod(FederatedBudget(epsilon, delta, rounds, clipping_norm))]


def federated_privacy(params: TrainParams, rounds: int, rounds_done: int) -> dict[str, Any]:
    """A federated version's privacy metrics: the accountant's epsilon after the rounds the federation ran, the most
    any client spent (one that took part in every round)."""
    assert params.dp_epsilon is not None and params.dp_delta is not None
    budget = FederatedBudget(params.dp_epsilon, params.dp_delta, rounds, params.dp_max_grad_norm)
    spent = budget.spent_after(rounds_done)
    privacy = {
        "mechanism": "client-side clipping and Gaussian noise (Flower LocalDpMod)",
        "accountant": ACCOUNTANT,
        "epsilon": spent,
        "epsilon_budget": params.dp_epsilon,
        "delta": params.dp_delta,
        "noise_multiplier": budget.noise_multiplier,
        "clipping_norm": budget.clipping_norm,
        "sensitivity": budget.sensitivity,
        "rounds": rounds_done,
        "rounds_planned": rounds,
    }
    return {"dp_epsilon": spent, "dp_delta": params.dp_delta, "privacy": privacy}
