"""Usage metering: requests, items, tokens, compute and job CPU time per project, key, model and endpoint."""

from stratus.metering.usage import GROUPS, Counts, Prices, UsageMeter, UsageReport

__all__ = ["GROUPS", "Counts", "Prices", "UsageMeter", "UsageReport"]
