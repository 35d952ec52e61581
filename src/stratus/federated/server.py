"""The federation's server side: a Flower ServerApp (SecAgg+ or plain fit workflow, FedAvg or FedProx) over the
relay's Grid. Runs in the job child (federated/worker.py); imports flwr and torch, so never in the Stratus server.

The ServerApp's main follows Flower's ``DefaultWorkflow`` (the client manager fed from the Grid, a fit workflow and
the default evaluate workflow per round), with two additions: before the first round it computes the federation's
preprocessing statistics through the same fit workflow (so with SecAgg+ the server only sees their sum, model.py),
and after each round it reports the round (clients joined and dropped, the weighted held-out loss and accuracy,
each client's held-out accuracy) as a progress line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.app_utils import start_update_client_manager_thread
from flwr.server.strategy import FedAvg, FedProx, Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.server.workflow.default_workflows import default_evaluate_workflow, default_fit_workflow
from flwr.supercore.task_identity import TaskIdentity

from stratus.federated import model as fed
from stratus.federated.client import preprocess_bytes
from stratus.federated.relay import RelayGrid
from stratus.training.params import TrainParams
from stratus.types import Array

Report = Callable[[dict[str, Any]], None]


@dataclass
class Outcome:
    """What the federation produced: the trained network and its per-round history."""

    model: Any
    rounds: list[dict[str, Any]] = field(default_factory=list)
    joined: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


class BoundedClientManager(SimpleClientManager):
    """Flower's client manager, but a round that cannot find its minimum of clients waits ``timeout`` seconds for
    them, not Flower's default of a day: the round is then skipped (no clients selected) and the job goes on."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def wait_for(self, num_clients: int, timeout: int = 86400) -> bool:
        return super().wait_for(num_clients, timeout=int(max(1, min(timeout, self.timeout))))


def _strategy(
    spec: dict[str, Any], minimum: int, config: Callable[[int], dict[str, Any]], clients: dict[str, float]
) -> Strategy:
    def aggregate_metrics(results: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        total = sum(n for n, _ in results) or 1
        clients.clear()
        clients.update({str(m.get("client", "?")): float(m.get("accuracy", 0.0)) for _, m in results})
        return {"accuracy": sum(n * float(m.get("accuracy", 0.0)) for n, m in results) / total}

    common: dict[str, Any] = {
        "fraction_fit": 1.0,
        "fraction_evaluate": 1.0,
        "min_fit_clients": minimum,
        "min_evaluate_clients": minimum,
        "min_available_clients": minimum,
        "on_fit_config_fn": config,
        "on_evaluate_config_fn": config,
        "evaluate_metrics_aggregation_fn": aggregate_metrics,
        "accept_failures": True,
    }
    if spec["strategy"] == "fedprox":
        return FedProx(proximal_mu=float(spec["proximal_mu"]), **common)
    return FedAvg(**common)


def run_federation(
    spec: dict[str, Any],
    grid: RelayGrid,
    report: Report,
    *,
    start_timeout: float | None = None,
) -> Outcome:
    """Wait for ``min_clients``, then run the ServerApp to its last round; return the trained network."""
    params = TrainParams.model_validate(spec["params"])
    shape = fed.Shape.of(spec)
    network = fed.build(spec["model"], shape, params)
    secure = bool(spec["secure_aggregation"])
    minimum = 2 if secure else 1  # SecAgg+ needs two to mask; a round goes on with whoever is left
    timeout = float(spec["round_timeout_s"])
    outcome = Outcome(network)
    phase = {"name": "train"}
    clients: dict[str, float] = {}

    def config(server_round: int) -> dict[str, Any]:
        values: dict[str, Any] = {"phase": phase["name"], "server_round": server_round}
        values["local_epochs"] = int(spec["local_epochs"])
        if phase["name"] == "train":
            values["preprocess"] = preprocess_bytes(fed.preprocess_arrays(network))
        return values

    strategy = _strategy(spec, minimum, config, clients)
    fit_workflow = (
        SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=0.6, timeout=timeout)
        if secure
        else default_fit_workflow
    )
    app = ServerApp()

    @app.main()
    def main(grid_: Any, context: Context) -> None:
        legacy = LegacyContext(
            context=context,
            config=ServerConfig(num_rounds=int(spec["rounds"]), round_timeout=timeout),
            strategy=strategy,
            client_manager=BoundedClientManager(timeout),
        )
        thread, stop, registered = start_update_client_manager_thread(grid_, legacy.client_manager)
        registered.wait()
        try:
            _wait_for_clients(grid, int(spec["min_clients"]), report, start_timeout)
            cfg = ConfigRecord()
            legacy.state.config_records[MAIN_CONFIGS_RECORD] = cfg
            _statistics(grid_, legacy, fit_workflow, network, shape, phase, spec, cfg)
            phase["name"] = "train"
            legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                ndarrays_to_parameters(fed.weights_of(network)), keep_input=True
            )
            started = time.monotonic()
            for server_round in range(1, int(spec["rounds"]) + 1):
                cfg[Key.CURRENT_ROUND] = server_round
                fit_workflow(grid_, legacy)
                _adopt(network, legacy)
                default_evaluate_workflow(grid_, legacy)
                entry = _round_entry(legacy, grid, clients, server_round, int(spec["rounds"]), started)
                outcome.rounds.append(entry)
                report({"event": "epoch", **entry})
        finally:
            stop.set()
            thread.join()

    # Flower stamps the messages a ServerApp creates with its process's task identity (a SuperLink sets it for the
    # ServerApp it starts); here the ServerApp is the job child's, run 1 of node SUPERLINK_NODE_ID.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SUPERLINK_NODE_ID, 1
    app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))
    outcome.joined, outcome.dropped = sorted(grid.joined), sorted(grid.dropped)
    return outcome


def _wait_for_clients(grid: RelayGrid, needed: int, report: Report, timeout: float | None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = -1
    while True:
        count = len(list(grid.get_node_ids()))
        if count != seen:
            seen = count
            report({"event": "clients", "connected": count, "needed": needed, "joined": sorted(grid.joined)})
        if count >= needed:
            return
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"only {count} of {needed} clients joined")
        time.sleep(0.05)


def _statistics(
    grid: Any,
    legacy: LegacyContext,
    fit_workflow: Any,
    network: Any,
    shape: fed.Shape,
    phase: dict[str, str],
    spec: dict[str, Any],
    cfg: ConfigRecord,
) -> None:
    """The preprocessing's statistics as two fit exchanges through the same (secure) workflow: round 0."""
    cfg[Key.CURRENT_ROUND] = 0
    phase["name"] = "scale"
    legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters([np.zeros(shape.channels, dtype=np.float32)]), keep_input=True
    )
    fit_workflow(grid, legacy)
    scale = _current(legacy)[0]
    phase["name"] = "moments"
    fit_workflow(grid, legacy)
    moments = _current(legacy)[0]
    fed.preprocess_from(network, moments, fed.exponents_from(scale), str(spec["params"].get("scaling", "standard")))


def _current(legacy: LegacyContext) -> list[Array]:
    record = legacy.state.array_records[MAIN_PARAMS_RECORD]
    return list(parameters_to_ndarrays(compat.arrayrecord_to_parameters(record, keep_input=True)))


def _adopt(network: Any, legacy: LegacyContext) -> None:
    weights = _current(legacy)
    if fed.finite(weights):
        fed.set_weights(network, weights)


def _round_entry(
    legacy: LegacyContext, grid: RelayGrid, clients: dict[str, float], server_round: int, rounds: int, started: float
) -> dict[str, Any]:
    history = legacy.history
    losses = dict(history.losses_distributed)
    accuracy = dict(history.metrics_distributed.get("accuracy", []))
    elapsed = time.monotonic() - started
    return {
        "epoch": server_round,
        "epochs": rounds,
        "round": server_round,
        "loss": losses.get(server_round),
        "val_metric": accuracy.get(server_round),
        "val_metric_name": "accuracy",
        "joined": sorted(grid.joined),
        "dropped": sorted(grid.dropped),
        "clients": dict(sorted(clients.items())),
        "eta_s": elapsed / server_round * (rounds - server_round),
    }


def parameters_of(values: Iterable[Array]) -> Any:
    return ndarrays_to_parameters(list(values))
