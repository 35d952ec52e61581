"""HTTP adapters only: each protocol maps requests onto the platform's services."""

from stratus.api.app import create_app

__all__ = ["create_app"]
