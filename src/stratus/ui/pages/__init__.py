"""The console's resource pages (models, datasets, jobs, compression runs, endpoints, the try-it panel).

``ROUTERS`` lists their routers; stratus.ui.app includes each in the console, behind the same guard.
"""

from __future__ import annotations

from fastapi import APIRouter

from stratus.ui.pages import compression, datasets, endpoints, jobs, models

ROUTERS: list[APIRouter] = [models.router, datasets.router, jobs.router, compression.router, endpoints.router]
