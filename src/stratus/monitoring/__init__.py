"""Monitoring: the inference log (log.py, its settings in policy.py), the metrics history (history.py), drift
and alerts. Services over the store; the data plane tells them of each inference (DataPlane.observers)."""
