"""The drift time series: one row per computed drift report, so drift can be plotted over time.

The table lives here, beside the only code that uses it; its schema is the Alembic migration
``drift_reports``. A row holds figures only (scores, shares, feature names), no logged values, so it may
stay in the plain metadata DB like the usage records.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from stratus.store import Database
from stratus.store.tables import Base, utcnow


class DriftReportRow(Base):
    __tablename__ = "drift_reports"
    __table_args__ = (Index("ix_drift_reports_project_model_at", "project_id", "model", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    endpoint: Mapped[str] = mapped_column(String(64), default="")
    window_rows: Mapped[int] = mapped_column(Integer)
    drift_share: Mapped[float] = mapped_column(Float)
    dataset_drift: Mapped[bool] = mapped_column(Boolean)
    #: {feature: [test, score, drifted, psi]} and the prediction's, compact.
    features: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


def _row_dict(row: DriftReportRow) -> dict[str, Any]:
    return {
        "at": row.at.isoformat() + "Z",
        "model": row.model,
        "version": row.version,
        "endpoint": row.endpoint or None,
        "window_rows": row.window_rows,
        "drift_share": row.drift_share,
        "dataset_drift": row.dataset_drift,
        "features": row.features,
    }


class DriftHistory:
    def __init__(self, db: Database, retention_days: float) -> None:
        self.db = db
        self.retention = timedelta(days=retention_days)

    def add(self, project_id: int, report: dict[str, Any]) -> None:
        compact = {
            f["name"]: [f["test"], f["score"], f["drifted"], f["psi"]]
            for f in [*report["features"], *([report["prediction"]] if report["prediction"] else [])]
        }
        with self.db.write() as s:
            s.add(
                DriftReportRow(
                    project_id=project_id,
                    model=report["model"],
                    version=report["version"],
                    endpoint=report.get("endpoint") or "",
                    window_rows=report["window"]["rows"],
                    drift_share=report["drift_share"],
                    dataset_drift=report["dataset_drift"],
                    features=compact,
                )
            )
            # Retention, enforced by the writer: the table never grows past its age limit.
            s.execute(delete(DriftReportRow).where(DriftReportRow.at < utcnow() - self.retention))

    def series(
        self,
        project_id: int,
        *,
        model: str | None = None,
        endpoint: str | None = None,
        version: int | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Oldest first, at most ``limit`` points (the newest ones)."""
        query = select(DriftReportRow).where(DriftReportRow.project_id == project_id)
        if model is not None:
            query = query.where(DriftReportRow.model == model)
        if endpoint is not None:
            query = query.where(DriftReportRow.endpoint == endpoint)
        if version is not None:
            query = query.where(DriftReportRow.version == version)
        if since is not None:
            query = query.where(DriftReportRow.at >= since)
        with self.db.read() as s:
            rows = s.scalars(query.order_by(DriftReportRow.at.desc(), DriftReportRow.id.desc()).limit(limit)).all()
        return [_row_dict(r) for r in reversed(rows)]
