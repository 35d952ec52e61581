"""Serving benchmarks: `make bench` (python -m benchmarks). Not part of `make test`'s pass/fail."""
