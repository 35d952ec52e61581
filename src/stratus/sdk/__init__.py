"""The Python SDK: ``from stratus import Client``."""

from stratus.sdk.alerts import verify_webhook
from stratus.sdk.client import Client
from stratus.sdk.errors import error_for_response
from stratus.sdk.jobs import Job

__all__ = ["Client", "Job", "error_for_response", "verify_webhook"]
