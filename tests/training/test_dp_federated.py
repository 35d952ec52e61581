"""A federated client's DP mods (training/privacy.py) on a real Flower ClientApp: clipping, the accountant's noise,
the budget accounted per round and a round past it refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp
from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import ErrorCode
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.task_identity import TaskIdentity
from opacus.accountants import RDPAccountant

from stratus.errors import InvalidInput
from stratus.training.privacy import ALPHAS, FederatedBudget, client_dp_mods, quiet_opacus


class Shift(NumPyClient):
    """A client whose local training moves every weight by ``step``; it counts its fits."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.fits = 0

    def fit(self, parameters: list[Any], config: dict[str, Any]) -> tuple[list[Any], int, dict[str, Any]]:
        self.fits += 1
        return [p + self.step for p in parameters], 10, {}


@pytest.fixture(autouse=True)
def task_identity() -> Iterator[None]:
    """Flower stamps messages with the process's task identity; put back what was there (nothing, normally)."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def fit(app: ClientApp, weights: list[np.ndarray], config: dict[str, Any]) -> Message:
    content = compat.fitins_to_recorddict(FitIns(ndarrays_to_parameters(weights), config), keep_input=True)
    message = Message(content=content, dst_node_id=1, message_type=MessageType.TRAIN)
    return app(message, Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={}))


def sent(reply: Message) -> tuple[np.ndarray, dict[str, Any]]:
    result = compat.recorddict_to_fitres(reply.content, keep_input=True)
    return parameters_to_ndarrays(result.parameters)[0], dict(result.metrics)


def test_each_round_is_noised_as_the_accountant_chose_and_the_round_past_the_budget_is_refused() -> None:
    client = Shift(5.0)
    mods = client_dp_mods(8.0, 1e-5, rounds=3, clipping_norm=1.0)
    budget = mods[0].budget
    app = ClientApp(client_fn=lambda _context: client.to_client(), mods=mods)
    zeros = [np.zeros(40_000, dtype=np.float32)]
    spent = []
    for server_round in (1, 2, 3):
        weights, metrics = sent(fit(app, zeros, {"server_round": server_round}))
        # The update (5 per weight) is clipped to norm 1, then noised: what is sent is almost all noise, with the
        # standard deviation of the accountant's noise multiplier times the sensitivity (twice the clipping norm).
        assert float(weights.std()) == pytest.approx(budget.noise_multiplier * 2.0, rel=0.03)
        spent.append(metrics["dp_epsilon"])
    accountant = RDPAccountant()
    for _ in range(3):
        accountant.step(noise_multiplier=budget.noise_multiplier, sample_rate=1.0)
    with quiet_opacus():
        assert spent[-1] == pytest.approx(float(accountant.get_epsilon(delta=1e-5, alphas=ALPHAS)), rel=1e-12)
    assert spent[0] < spent[1] < spent[2] <= 8.0 and spent[2] > 7.9
    assert [budget.spent_after(r) for r in (1, 2, 3)] == pytest.approx(spent, rel=1e-12)
    # A fourth round would go past the budget: refused before the client trains, with the reason.
    reply = fit(app, zeros, {"server_round": 4})
    assert reply.has_error() and reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert "privacy budget spent" in str(reply.error.reason)
    assert client.fits == 3 and budget.rounds_done == 3


def test_the_update_is_clipped_to_the_clipping_norm() -> None:
    """An update of 1 on each of 10,000 weights (norm 100) is sent scaled down to norm 0.5: 0.005 a weight, plus
    noise whose mean over the weights is within a few thousandths of that (a large budget, little noise)."""
    mods = client_dp_mods(2000.0, 1e-5, rounds=1, clipping_norm=0.5)
    noise = mods[0].budget.noise_std
    assert noise < 0.05
    app = ClientApp(client_fn=lambda _context: Shift(1.0).to_client(), mods=mods)
    start = np.linspace(-1, 1, 10_000).astype(np.float32)
    weights, _ = sent(fit(app, [start], {"server_round": 1}))
    update = weights.astype(np.float64) - start
    assert float(update.mean()) == pytest.approx(0.005, abs=6 * noise / 100)
    assert float(update.std()) == pytest.approx(noise, rel=0.05)


def test_the_preprocessing_phases_are_neither_noised_nor_counted() -> None:
    mods = client_dp_mods(1.0, 1e-5, rounds=1)
    app = ClientApp(client_fn=lambda _context: Shift(2.0).to_client(), mods=mods)
    weights, metrics = sent(fit(app, [np.zeros(10, dtype=np.float32)], {"phase": "scale"}))
    assert np.array_equal(weights, np.full(10, 2.0, dtype=np.float32)) and "dp_epsilon" not in metrics
    assert mods[0].budget.rounds_done == 0


@pytest.mark.parametrize(
    "args", [(0.0, 1e-5, 3, 1.0), (1.0, 0.0, 3, 1.0), (1.0, 1.0, 3, 1.0), (1.0, 1e-5, 0, 1.0), (1.0, 1e-5, 3, 0.0)]
)
def test_bad_federated_budgets_are_refused(args: tuple[float, float, int, float]) -> None:
    with pytest.raises(InvalidInput):
        FederatedBudget(*args)


def test_a_federated_versions_epsilon_is_the_accountants_after_the_rounds_run() -> None:
    from stratus.training.params import TrainParams
    from stratus.training.privacy import federated_privacy

    params = TrainParams(dp_epsilon=4.0, dp_max_grad_norm=0.5)
    full, short = federated_privacy(params, 10, 10), federated_privacy(params, 10, 4)
    assert short["dp_epsilon"] < full["dp_epsilon"] <= 4.0 and full["dp_delta"] == 1e-5
    assert full["privacy"]["sensitivity"] == 1.0 and full["privacy"]["rounds"] == 10
    assert short["dp_epsilon"] == pytest.approx(FederatedBudget(4.0, 1e-5, 10, 0.5).spent_after(4), rel=1e-12)
