"""Placeholder until the page lands (this session)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
