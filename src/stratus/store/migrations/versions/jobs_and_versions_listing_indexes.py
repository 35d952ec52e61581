"""indexes for paged lists: a project's jobs newest first, and the versions trained on a dataset

Revision ID: jobs_and_versions_listing_indexes
Revises: console_sessions
Create Date: 2026-12-02 06:30:00
"""

from __future__ import annotations

from alembic import op

revision = "jobs_and_versions_listing_indexes"
down_revision = "console_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The console lists jobs 50 a page, newest first: without this, each page sorted every job of the project.
    op.create_index("ix_jobs_project_created", "jobs", ["project_id", "created_at"])
    op.create_index("ix_model_versions_dataset", "model_versions", ["dataset"])


def downgrade() -> None:
    op.drop_index("ix_model_versions_dataset", table_name="model_versions")
    op.drop_index("ix_jobs_project_created", table_name="jobs")
