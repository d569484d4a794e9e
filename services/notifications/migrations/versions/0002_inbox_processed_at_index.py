"""inbox: index processed_at, so that retention's age-batched deletes do not scan the table

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 17:45:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbox") as batch_op:
        batch_op.create_index("ix_inbox_processed_at", ["processed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("inbox") as batch_op:
        batch_op.drop_index("ix_inbox_processed_at")
