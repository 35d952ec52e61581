"""What a wheel of the package carries for the console: every template and static file, the built vendor files
included, matched by pyproject's package-data; and the lock file pins what `make ui-assets` installs."""

from __future__ import annotations

import json
import tomllib

from conftest import ROOT

PACKAGE = ROOT / "src" / "stratus"


def test_package_data_ships_templates_and_built_assets() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["stratus"]
    shipped = {p for pattern in patterns for p in PACKAGE.glob(pattern) if p.is_file()}
    ui = PACKAGE / "ui"
    wanted = {p for p in (ui / "templates").rglob("*.html")} | {
        p for p in (ui / "static").rglob("*") if p.is_file() and not p.name.startswith(".")
    }
    assert wanted - shipped == set()
    assert ui / "static" / "vendor" / "uPlot.iife.min.js" in shipped  # built by make ui-assets, not committed


def test_the_lock_file_pins_the_packages() -> None:
    manifest = json.loads((ROOT / "ui" / "package.json").read_text())
    lock = json.loads((ROOT / "ui" / "package-lock.json").read_text())["packages"]
    for name, version in {**manifest["dependencies"], **manifest["devDependencies"]}.items():
        entry = lock[f"node_modules/{name}"]
        assert entry["version"] == version
        assert entry["integrity"].startswith("sha512-")
