"""Federated learning on Flower (docs/federated.md): the job kind and its service here; the Flower parts (relay,
server, client, model) run in job children and clients only."""

import os

# Flower can report usage to its makers over the network (flwr.supercore.telemetry, read when flwr is first
# imported, which is always through this package): nothing leaves a Stratus machine that the operator did not ask for.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
