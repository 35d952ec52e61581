"""The console's navigation: one entry per section, shown to sessions whose key holds its scope."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NavEntry:
    label: str
    href: str
    scope: str = "read"


NAV: tuple[NavEntry, ...] = (
    NavEntry("Overview", "/ui/"),
    NavEntry("Models", "/ui/models"),
    NavEntry("Datasets", "/ui/datasets"),
    NavEntry("Jobs", "/ui/jobs"),
    NavEntry("Endpoints", "/ui/endpoints"),
    NavEntry("Usage", "/ui/usage"),
    NavEntry("Audit log", "/ui/audit", "admin"),
    NavEntry("Keys", "/ui/keys", "admin"),
    NavEntry("Projects", "/ui/projects", "admin"),
)
