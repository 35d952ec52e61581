"""Edge devices: bundles signed for offline serving, the device registry, sync and telemetry (docs/edge.md)."""

from __future__ import annotations

from stratus.devices.service import DeviceInfo, DeviceService

__all__ = ["DeviceInfo", "DeviceService"]
