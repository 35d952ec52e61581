"""Datasets, trainers and evaluation. Trainers run in child processes (see stratus.jobs)."""

from stratus.training.service import DatasetService

__all__ = ["DatasetService"]
