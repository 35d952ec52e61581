"""The console's resource pages (models, datasets, jobs, compression runs, endpoints, the try-it panel).

``ROUTERS`` lists their routers; stratus.ui.app includes each in the console, behind the same guard.
"""

from __future__ import annotations

from fastapi import APIRouter

ROUTERS: list[APIRouter] = []
