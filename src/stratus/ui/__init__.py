"""The web console at /ui: server-rendered pages (Jinja2) with a little JavaScript, served by the same process.

A browser signs in with an API key and then holds a server-side session (stratus.security.sessions); every
page acts as that key, through the same services and scope checks as the API. docs/console.md describes it;
``mount_console`` is what the server (stratus.platform.create_app) calls.
"""

from __future__ import annotations

from stratus.ui.app import CONSOLE_PATH, build_console, mount_console

__all__ = ["CONSOLE_PATH", "build_console", "mount_console"]
