"""several servers on one PostgreSQL: endpoints' routing tables published by the endpoint-control holder

Revision ID: scaleout_endpoint_routes
Revises: scaleout_job_runner_and_leases
Create Date: 2026-12-02 03:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "scaleout_endpoint_routes"
down_revision = "scaleout_job_runner_and_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "endpoint_routes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("table", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project", "name", name="uq_endpoint_routes_project_name"),
    )


def downgrade() -> None:
    op.drop_table("endpoint_routes")
