"""Job queue and executors."""

from stratus.jobs.executor import Executor, LocalProcessExecutor, WorkItem
from stratus.jobs.service import TERMINAL, JobKind, JobService, job_dict

__all__ = ["TERMINAL", "Executor", "JobKind", "JobService", "LocalProcessExecutor", "WorkItem", "job_dict"]
