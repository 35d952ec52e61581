"""Parsing a JSON object out of a request body: the protocol layer's, for the API's non-inference routes."""

from __future__ import annotations

from stratus.protocol import json_object

__all__ = ["json_object"]
