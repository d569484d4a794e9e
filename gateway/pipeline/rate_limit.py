"""Rate limit: the route's policy for this consumer (429, or 503 when Redis is gone and the
policy fails closed); the RateLimit fields go on the answer (`ex.rate`, written by both
servers on every answer, problems included).

In process (the embedded default) the decision is made at once. With Redis, the call is
submitted with a callback (`RedisClient.submit_callback`) and the chain is resumed from the
reply: no task, no future (ADR 0006's addendum). A Redis that lost the limiter's script, and
traced requests (a CLIENT span), take a task.
"""

from __future__ import annotations

from typing import Any

from chassis import Problem, tracing
from chassis.logging import correlation_id

from ..ratelimit import RedisError
from ..routing import Route
from .exchange import Exchange
from .policy import SUSPEND, Policy, Verdict

__all__ = ["RateLimit"]


class RateLimit(Policy):
    name = "rate_limit"
    order = 400

    def __init__(self, settings: Any = None, context: Any = None) -> None:
        super().__init__(settings, context)
        self.limiter: Any = context.limiter if context is not None else None
        self.route_name = ""

    def bind(self, route: Route) -> Policy | None:
        limiter = self.limiter
        if limiter is None or limiter.by_route.get(route.name) is None:
            return None
        bound = RateLimit(None, self.context)
        bound.route_name = route.name
        return bound

    def on_request(self, ex: Exchange) -> Verdict:
        limiter = self.limiter
        claims = ex.claims
        asked = limiter.begin(
            self.route_name,
            claims,
            lambda: limiter.client_ip_of(ex.remote, tuple(ex.forwarded_for)),
        )
        if asked is None:
            return None
        plan, key = asked
        remote = limiter.remote
        if remote is None:  # in-process limits: decided now
            ex.rate = limiter.verdict(plan, *limiter.decide_locally(plan, key))
            return None
        if tracing.ENABLED:
            return self._admit(ex)
        try:
            remote.client.submit_callback(remote.payload(key, plan), self._replied, ex, plan, key)
        except RedisError as exc:  # not connected, or too many calls waiting
            decided = limiter.decided(plan, key, None, exc)
            ex.rate = limiter.verdict(plan, *decided)
            return None
        return SUSPEND

    async def _admit(self, ex: Exchange) -> None:
        limiter = self.limiter
        ex.rate = await limiter.admit(
            self.route_name,
            ex.claims,
            lambda: limiter.client_ip_of(ex.remote, tuple(ex.forwarded_for)),
        )

    def _replied(self, ex: Exchange, plan: Any, key: str, reply: Any, error: Any) -> None:
        """Redis answered (or the call failed): the verdict, then the rest of the chain."""
        chain = ex.chain
        assert chain is not None
        limiter = self.limiter
        if error is None and limiter.quiet:  # the common case: nothing here logs
            try:
                decided = limiter.decided(plan, key, reply, None)
                ex.rate = limiter.verdict(plan, *decided)
            except Problem as problem:  # 429
                chain.resume(ex, problem)
                return
            except Exception:
                chain.crashed(ex, self.name)
                return
            chain.proceed(ex)
            return
        token = correlation_id.set(ex.rid)
        try:
            try:
                decided = limiter.decided(plan, key, reply, error)
                if decided is None:  # Redis lost the script: `decide` loads it, in a task
                    chain.resume(ex, self._decide(ex, plan, key))
                    return
                ex.rate = limiter.verdict(plan, *decided)
            except Problem as problem:
                chain.resume(ex, problem)
                return
            except Exception:
                chain.crashed(ex, self.name)
                return
            chain.resume(ex, None)
        finally:
            correlation_id.reset(token)

    async def _decide(self, ex: Exchange, plan: Any, key: str) -> None:
        limiter = self.limiter
        ex.rate = limiter.verdict(plan, *(await limiter.decide(plan, key)))
