"""inference log pages (sealed) and their batch keys, per model/endpoint log settings, metrics history

Revision ID: inference_log_and_metrics_history
Revises: alerts_rules_events_deliveries
Create Date: 2026-12-02 03:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "inference_log_and_metrics_history"
down_revision = "alerts_rules_events_deliveries"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "log_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("payloads", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project", "scope", "name", name="uq_log_settings_target"),
    )
    op.create_table(
        "inference_log_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("wrapped", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "inference_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        sa.Column("first_at", sa.Float(), nullable=False),
        sa.Column("last_at", sa.Float(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("key_ref", sa.Integer(), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["key_ref"], ["inference_log_keys.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_inference_log_model", "inference_log", ["project", "model", "last_at"])
    op.create_index("ix_inference_log_endpoint", "inference_log", ["project", "endpoint", "last_at"])
    op.create_index("ix_inference_log_last_at", "inference_log", ["last_at"])
    op.create_table(
        "metrics_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("latency_sum", sa.Float(), nullable=False),
        sa.Column("latency", sa.JSON(), nullable=False),
        sa.Column("batch_rows", sa.Integer(), nullable=False),
        sa.Column("batch_runs", sa.Integer(), nullable=False),
        sa.Column("queue_sum", sa.Float(), nullable=False),
        sa.Column("replicas_sum", sa.Float(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("dropped", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_metrics_history_series", "metrics_history", ["project", "scope", "name", "resolution", "at"])
    op.create_index("ix_metrics_history_at", "metrics_history", ["at"])


def downgrade() -> None:
    op.drop_index("ix_metrics_history_at", table_name="metrics_history")
    op.drop_index("ix_metrics_history_series", table_name="metrics_history")
    op.drop_table("metrics_history")
    op.drop_index("ix_inference_log_last_at", table_name="inference_log")
    op.drop_index("ix_inference_log_endpoint", table_name="inference_log")
    op.drop_index("ix_inference_log_model", table_name="inference_log")
    op.drop_table("inference_log")
    op.drop_table("inference_log_keys")
    op.drop_table("log_settings")
