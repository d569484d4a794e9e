"""Applying events to the read models: live from the broker (inside the chassis inbox
transaction) and from orders' history feed (catch-up at start, gap filling, `rebuild`).

Order events apply strictly in stream order: version n+1 after n. An older version was applied
already (from the feed or an earlier delivery) and is skipped; a newer one means a gap, filled
from the feed starting at the stream's last applied position (every missing event of the
stream lies after it), and the live event is never applied before its predecessors. Should
the feed not have them yet, the handler raises and the chassis delivers the event again later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine

from chassis.messaging import Event

from ..adapters import projection as sql
from ..adapters.consumer import received_envelope
from ..adapters.feed import FeedClient, FeedUnavailable
from ..domain import Envelope, evolve
from .lag import LagTracker

__all__ = ["GapNotFilled", "Projector"]

log = logging.getLogger("portico.views.projector")

MAX_GAP_PAGES = 20  # a gap fill reads at most this many feed pages in one transaction


class GapNotFilled(Exception):
    """A stream's earlier events are not in the feed yet; the event is tried again later."""


class Projector:
    def __init__(
        self,
        lag: LagTracker,
        feed: FeedClient | None = None,
        *,
        page: int = 500,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.lag = lag
        self.feed = feed
        self.page = page
        self.clock = clock

    # -- one event --------------------------------------------------------------------------

    def handle_event(self, event: Event, conn: Connection) -> None:
        """The chassis handler: the inbox row for `event` is in this transaction already."""
        env = received_envelope(event)
        if env.type.startswith("order."):
            if self.apply_order(conn, env) == "gap":
                self.fill_gap(conn, env)
        elif env.type == "notification.sent":
            order_id = env.data.get("order_id")
            if isinstance(order_id, str) and order_id:
                sql.add_notification(conn, order_id[:64])
        elif env.type.startswith("product."):
            self._product(conn, env)

    def _product(self, conn: Connection, env: Envelope) -> None:
        d = env.data
        pid, sku, version = d.get("id"), d.get("sku"), d.get("version")
        if isinstance(pid, str) and isinstance(sku, str) and isinstance(version, int):
            deleted = env.type == "product.deleted"
            sql.upsert_product(conn, pid[:64], sku[:64], version, deleted)

    def apply_order(self, conn: Connection, env: Envelope) -> str:
        """ "applied", "skipped" (applied before) or "gap" (an earlier version is missing)."""
        order_id = env.stream or env.data.get("order_id")
        if not isinstance(order_id, str) or not order_id:
            log.warning("order event without a stream skipped", extra={"event_id": env.id})
            return "skipped"
        view = sql.load_view(conn, order_id[:64])
        known = view.version if view is not None else 0
        version = env.version if env.version is not None else known + 1
        if version <= known:
            return "skipped"
        if version > known + 1:
            return "gap"
        new, sale = evolve(view, env)
        sql.save_view(conn, new, known)
        if sale is not None:
            sql.add_sale(conn, sale)
        lag = self.lag.applied_event(env.occurred_at, env.position)
        sql.save_checkpoint(conn, env.position or 0, lag, self.clock())
        return "applied"

    def fill_gap(self, conn: Connection, env: Envelope) -> None:
        """Apply the stream's missing events (and whatever else the pages hold) from the feed,
        then `env` itself; raise GapNotFilled when the feed does not have them yet."""
        if self.feed is None:
            raise GapNotFilled(f"no feed to fill the gap before {env.id}")
        view = sql.load_view(conn, str(env.stream))
        after = view.position if view is not None else 0
        log.info(
            "gap in stream; reading the feed",
            extra={"stream": env.stream, "version": env.version, "after": after},
        )
        try:
            for _ in range(MAX_GAP_PAGES):
                page = self.feed.read(after, self.page)
                for e in page.events:
                    self.apply_order(conn, e)
                    after = max(after, e.position or 0)
                if not page.events or after >= page.last_position:
                    break
        except FeedUnavailable as exc:
            raise GapNotFilled(f"feed unavailable: {exc}") from exc
        if self.apply_order(conn, env) == "gap":
            raise GapNotFilled(f"stream {env.stream} still lacks events before {env.version}")

    # -- history -----------------------------------------------------------------------------

    def catch_up(self, engine: Engine) -> int:
        """Apply the feed from the stored position to its head, a page per transaction;
        returns the number of events applied. FeedUnavailable propagates."""
        assert self.feed is not None, "catch_up needs the feed"
        applied = 0
        with engine.connect() as conn:
            after = sql.read_checkpoint(conn)[0]
        while True:
            page = self.feed.read(after, self.page)
            with engine.begin() as conn:
                for e in page.events:
                    applied += self.apply_order(conn, e) == "applied"
                    after = max(after, e.position or 0)
                if page.events:  # remember how far this page got even if all were skipped
                    sql.save_checkpoint(conn, after, self.lag.last_lag or 0.0, self.clock())
            if not page.events or after >= page.last_position:
                self.lag.caught_up_now(after)
                log.info("caught up with the feed", extra={"position": after, "applied": applied})
                return applied

    def rebuild(self, engine: Engine) -> int:
        """Drop the order-derived read models and fold orders' whole history again."""
        with engine.begin() as conn:
            sql.clear_projections(conn)
        return self.catch_up(engine)
