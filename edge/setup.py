"""Build step of the edge runner: only the platform modules the runner shares go into its wheel.

pyproject.toml maps the ``stratus`` package to ../src/stratus; this keeps, of it, the modules below (the
protocol codec, the error kinds, the tensor types, the ONNX runtime wrapper and what they import), so the
wheel carries no server, database, HTTP framework or training code. tests/edge/test_edge_package.py lists the
wheel and checks the set.
"""

from __future__ import annotations

from setuptools import setup
from setuptools.command.build_py import build_py

#: Package -> the modules of it the runner ships (None: all of them).
SHARED: dict[str, set[str] | None] = {
    "stratus_edge": None,
    "stratus": {"__init__", "version", "errors", "types", "files"},
    "stratus.protocol": None,
    "stratus.runtime": {"__init__", "batching", "config", "pool", "session", "pipeline"},
}


class SharedModulesOnly(build_py):
    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        keep = SHARED[package]
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if keep is None or m[1] in keep]


setup(cmdclass={"build_py": SharedModulesOnly})
