"""The web console's tests (a package, so this folder's conftest.py has a module name of its own)."""
