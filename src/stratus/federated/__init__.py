"""Federated learning on Flower (docs/federated.md): the job kind and its service here; the Flower parts
(relay, server, client, model) run in job children and clients only."""
