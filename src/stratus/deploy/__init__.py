"""Deployments: endpoints routing to model versions served by replica processes, with blue/green (the
``rolling`` rollout) and canary rollouts, a supervisor, autoscaling (down to zero) and exports for Docker
and Kubernetes. No HTTP here: the router calls replicas as an HTTP client; the HTTP adapters live in
stratus.api. The names below load when asked for: a replica imports deploy.bundle and deploy.local, and
must not load the controller or the endpoint records (a database).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stratus.deploy.controller import Controller, Plan
    from stratus.deploy.metrics import DeployMetrics
    from stratus.deploy.replicas import LocalPlacement
    from stratus.deploy.service import EndpointService
    from stratus.deploy.spec import EndpointSpec

__all__ = ["Controller", "DeployMetrics", "EndpointService", "EndpointSpec", "LocalPlacement", "Plan"]

_MODULES = {
    "Controller": "controller",
    "Plan": "controller",
    "DeployMetrics": "metrics",
    "LocalPlacement": "replicas",
    "EndpointService": "service",
    "EndpointSpec": "spec",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"stratus.deploy.{module}"), name)
