"""The federated job's child: ``python -m stratus.federated.worker --job DIR --dataset - --threads N``.

It starts the relay (relay.py) on loopback (or the host the server was told to bind federations to) and a free
port, prints where it listens (the Stratus server records it, and hands it to clients at ``join``), runs the Flower
ServerApp (server.py) to its last round, then exports the trained network to ONNX and writes the job's result; the
Stratus server registers it. Like every job child it never touches the database.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stratus import __version__
from stratus.training.worker import child_main, report


def run(job_dir: Path, _stdin: bytes, threads: int) -> None:
    import torch

    from stratus.federated import model as fed
    from stratus.federated.relay import RelayGrid, RelayServicer, serve
    from stratus.federated.server import run_federation
    from stratus.formats import torch_to_onnx

    torch.set_num_threads(threads)
    request: dict[str, Any] = json.loads((job_dir / "request.json").read_text())
    spec = request["spec"]
    grid = RelayGrid()
    server, port = serve(RelayServicer(grid, bytes.fromhex(request["secret"]), request["job_id"]), request["host"])
    try:
        report({"event": "listening", "address": f"{request['host']}:{port}"})
        outcome = run_federation(spec, grid, report)
    finally:
        server.stop(grace=1)
    network = outcome.model
    shape = fed.Shape.of(spec)
    extra = {"input": {2: "height", 3: "width"}} if shape.image_shape is not None else None
    converted = torch_to_onnx(
        network,
        fed.sample_input(shape, network),
        output_names=("logits", "label"),
        dynamic_axes_extra=extra,
        rtol=1e-4,
        atol=1e-4,
    )
    (job_dir / "model.onnx").write_bytes(converted.onnx_bytes)
    last = outcome.rounds[-1] if outcome.rounds else {}
    metrics = {
        "accuracy": last.get("val_metric"),
        "loss": last.get("loss"),
        "client_accuracy": last.get("clients", {}),
        "rounds": len(outcome.rounds),
    }
    if spec["params"].get("dp_epsilon") is not None:  # the clients' DP budget: the accountant's epsilon spent
        from stratus.training.params import TrainParams
        from stratus.training.privacy import federated_privacy

        params = TrainParams.model_validate(spec["params"])
        metrics.update(federated_privacy(params, int(spec["rounds"]), len(outcome.rounds)))
    federation = {
        "clients": outcome.joined,
        "dropped": outcome.dropped,
        "rounds": outcome.rounds,
        "strategy": spec["strategy"],
        "secure_aggregation": spec["secure_aggregation"],
    }
    (job_dir / "federation.json").write_text(json.dumps(federation, indent=1))
    result = {
        "metrics": metrics,
        "task": "classification",
        "source": f"federated:{spec['model']}",
        "stratus_version": __version__,
    }
    (job_dir / "result.json").write_text(json.dumps(result))
    report({"event": "done", "metrics": {k: v for k, v in metrics.items() if isinstance(v, float)}})


def main() -> None:
    child_main(run)


if __name__ == "__main__":
    main()
