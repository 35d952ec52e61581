"""Deployments: endpoints routing to model versions served by replica processes, with rolling and canary
rollouts, a supervisor, autoscaling (down to zero) and exports for Docker and Kubernetes. No HTTP here:
the router calls replicas as an HTTP client; the HTTP adapters live in stratus.api."""

from stratus.deploy.controller import Controller, Plan
from stratus.deploy.metrics import DeployMetrics
from stratus.deploy.replicas import LocalPlacement
from stratus.deploy.service import EndpointService
from stratus.deploy.spec import EndpointSpec

__all__ = ["Controller", "DeployMetrics", "EndpointService", "EndpointSpec", "LocalPlacement", "Plan"]
