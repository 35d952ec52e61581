"""Job queue and executors."""

from stratus.jobs.executor import Executor, LocalProcessExecutor, WorkItem
from stratus.jobs.service import TERMINAL, JobService, job_dict

__all__ = ["TERMINAL", "Executor", "JobService", "LocalProcessExecutor", "WorkItem", "job_dict"]
