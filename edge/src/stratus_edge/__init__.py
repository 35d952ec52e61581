"""Stratus edge runner: serves a signed model bundle offline, keeps it in sync with the cloud, buffers telemetry
and hands low-confidence requests back to the cloud (docs/edge.md)."""

from __future__ import annotations

__version__ = "0.1.0"
