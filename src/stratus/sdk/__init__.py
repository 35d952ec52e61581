"""The Python SDK: ``from stratus import Client``."""

from stratus.sdk.client import Client, error_for_response

__all__ = ["Client", "error_for_response"]
