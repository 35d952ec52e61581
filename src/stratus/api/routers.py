"""The protocol routers that infer (V2, V1, OpenAI): the full server and a replica mount the same ones, and
the fast lane serves their inference routes. Its own module so a replica imports them without the control
routes (api/app.py)."""

from __future__ import annotations

from stratus.api import openai, v1, v2

INFERENCE_ROUTERS = (v2.router, v1.router, openai.router)
