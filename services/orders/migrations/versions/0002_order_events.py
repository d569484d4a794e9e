"""order events: the event log (ADR 0029), and events synthesized for the orders already there

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 21:50:00

Each existing order gets the shortest stream whose fold equals its row (status, step, prices,
total, reason, payment id): `order.created`, then what its step implies, caused by
"migration 0002". The stream's version and the step's start are cached on the row.
Self-contained on purpose: a migration must not change when the application code does.
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CAUSE = "migration 0002"
MISMATCH = "the payment did not match the order"

_orders = sa.table(
    "orders",
    sa.column("id", sa.String),
    sa.column("owner", sa.String),
    sa.column("payment_method", sa.String),
    sa.column("status", sa.String),
    sa.column("step", sa.String),
    sa.column("currency", sa.String),
    sa.column("total_cents", sa.BigInteger),
    sa.column("reason", sa.Text),
    sa.column("payment_id", sa.String),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
    sa.column("stream_version", sa.Integer),
    sa.column("step_since", sa.DateTime(timezone=True)),
)
_lines = sa.table(
    "order_lines",
    sa.column("order_id", sa.String),
    sa.column("position", sa.Integer),
    sa.column("sku", sa.String),
    sa.column("quantity", sa.Integer),
    sa.column("unit_price_cents", sa.BigInteger),
)
_events = sa.table(
    "order_events",
    sa.column("event_id", sa.String),
    sa.column("stream_id", sa.String),
    sa.column("version", sa.Integer),
    sa.column("type", sa.String),
    sa.column("schema_version", sa.Integer),
    sa.column("data", sa.JSON),
    sa.column("occurred_at", sa.String),
    sa.column("cause", sa.String),
)


def _money(cents: int | None) -> str | None:
    return None if cents is None else str((Decimal(int(cents)) / 100).quantize(Decimal("0.01")))


def _time(value: datetime) -> str:
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _stream(o: Any, items: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], bool]]:
    """(type, data, at the step's start) for one order row; the first event is at creation."""
    base = {"order_id": o.id, "owner": o.owner}
    total = _money(o.total_cents)
    created = {
        **base,
        "items": items,
        "total": total,
        "currency": o.currency,
        "payment_method": o.payment_method,
    }
    out: list[tuple[str, dict[str, Any], bool]] = [("order.created", created, False)]
    step, status = o.step, o.status
    if step == "PRICE":
        return out
    if total is None:  # rejected before pricing (unknown sku)
        return [*out, ("order.rejected", {**base, "reason": o.reason or "rejected"}, True)]
    if step == "RESERVE":
        return out
    captured = {**base, "payment_id": o.payment_id, "amount": total, "currency": o.currency}
    if status == "CONFIRMED":
        out += [("order.stock_reserved", base, False), ("order.payment_captured", captured, True)]
        out.append(
            (
                "order.confirmed",
                {**base, "total": total, "currency": o.currency, "payment_id": o.payment_id},
                True,
            )
        )
        if step == "DONE":
            out.append(("order.stock_committed", base, True))
        return out
    if step == "CHARGE":
        return [*out, ("order.stock_reserved", base, True)]
    if step == "REFUND":
        wrong = {**captured, "amount": "0.00" if total != "0.00" else "0.01"}
        return [
            *out,
            ("order.stock_reserved", base, False),
            ("order.payment_captured", wrong, True),
        ]
    if o.payment_id is not None:
        out.append(("order.payment_captured", captured, False))
    reason = o.reason or "rejected"
    if step == "RELEASE":
        return [*out, ("order.compensating", {**base, "reason": reason, "step": "RELEASE"}, True)]
    return [*out, ("order.rejected", {**base, "reason": reason}, True)]  # REJECTED, DONE


def upgrade() -> None:
    op.create_table(
        "order_events",
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("stream_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.String(length=40), nullable=False),
        sa.Column("cause", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("position"),
        sa.UniqueConstraint("event_id"),
        sa.UniqueConstraint("stream_id", "version", name="uq_order_events_stream_version"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("stream_version", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("step_since", sa.DateTime(timezone=True), nullable=True))
    _synthesize(op.get_bind())


def _synthesize(conn: sa.Connection) -> None:
    lines: dict[str, list[dict[str, Any]]] = {}
    for ln in conn.execute(sa.select(_lines).order_by(_lines.c.order_id, _lines.c.position)):
        item = {"sku": ln.sku, "quantity": ln.quantity, "unit_price": _money(ln.unit_price_cents)}
        lines.setdefault(ln.order_id, []).append(item)
    rows = conn.execute(sa.select(_orders).order_by(_orders.c.created_at, _orders.c.id)).all()
    for o in rows:
        stream = _stream(o, lines.get(o.id, []))
        created, updated = _time(o.created_at), _time(o.updated_at)
        conn.execute(
            _events.insert(),
            [
                {
                    "event_id": uuid.uuid4().hex,
                    "stream_id": o.id,
                    "version": version,
                    "type": kind,
                    "schema_version": 2 if kind == "order.created" else 1,
                    "data": data,
                    "occurred_at": updated if later else created,
                    "cause": CAUSE,
                }
                for version, (kind, data, later) in enumerate(stream, start=1)
            ],
        )
        step_began = o.updated_at if any(later for *_, later in stream) else o.created_at
        conn.execute(
            _orders.update()
            .where(_orders.c.id == o.id)
            .values(stream_version=len(stream), step_since=step_began)
        )


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch copy of `orders` would trip
    # the foreign keys of order_lines and order_traces.
    op.drop_column("orders", "step_since")
    op.drop_column("orders", "stream_version")
    op.drop_table("order_events")
