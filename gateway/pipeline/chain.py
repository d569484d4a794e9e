"""A route's compiled chain and the one runner every server path uses.

The runner is inline: it calls each policy's `on_request` in order while they answer at once
(None: go on), so a request whose policies decide without waiting never makes a task, a
coroutine or a future (ADR 0006: a task cost more than the rest of a proxied request). At the
first step that returns an awaitable it moves into a task, from that step on; a step that
returns `SUSPEND` has arranged a callback (a Redis reply, an upstream response head) that
calls `resume`. Either way the request ends in `_respond`: the response-head phases, then
`ex.done(ex)`, the server adapter's writer. The adapter calls `log` after the last byte.

A policy that raises `Problem` answers that problem. Anything else is a bug in the policy: it
is logged once with the policy's name and the request id, and answered 500 problem+json; the
adapter always gets its `done` call, so no connection is left hanging.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from chassis import Problem
from chassis.logging import correlation_id

from .exchange import Exchange
from .policy import RELAY, SUSPEND, Answer, Policy, overrides, problem_answer

__all__ = ["Chain", "crash_answer", "run_to_end"]

log = logging.getLogger("portico.gateway.pipeline")

_tasks: set[asyncio.Task[Any]] = set()  # strong references until each task is done


def crash_answer(ex: Exchange, name: str, where: str) -> Answer:
    """A policy raised: log it once with its name, and the 500 problem to answer."""
    token = correlation_id.set(ex.rid) if ex.rid else None
    try:
        log.exception(
            "policy %s failed in %s",
            name,
            where,
            extra={"policy": name, "phase": where, "path": ex.path},
        )
    finally:
        if token is not None:
            correlation_id.reset(token)
    return problem_answer(Problem(500, "an unexpected error occurred"), ex)


class Chain:
    """The policies of one route, sorted, with each phase's callables listed once."""

    __slots__ = ("_from", "bodies", "heads", "logs", "names", "policies", "requests")

    def __init__(self, policies: Iterable[Policy]) -> None:
        ordered = sorted(policies, key=lambda p: p.order)  # stable: equal orders keep theirs
        self.policies: tuple[Policy, ...] = tuple(ordered)
        on_request = [p for p in ordered if overrides(p, "on_request")]
        self.requests: tuple[Callable[[Exchange], Any], ...] = tuple(
            p.on_request for p in on_request
        )
        self.names: tuple[str, ...] = tuple(p.label for p in on_request)
        # (index, step) pairs from each index on: `_run` resumes at any step without indexing
        numbered = tuple(enumerate(self.requests))
        self._from = tuple(numbered[i:] for i in range(len(numbered) + 1))
        self.heads = tuple(
            (p.on_response_head, p.label)
            for p in reversed(ordered)
            if overrides(p, "on_response_head")
        )
        self.bodies = tuple(
            (p.on_response_body, p.label) for p in ordered if overrides(p, "on_response_body")
        )
        self.logs = tuple((p.on_log, p.label) for p in ordered if overrides(p, "on_log"))

    def __repr__(self) -> str:
        return f"Chain({', '.join(p.label for p in self.policies)})"

    # --- the request phase ----------------------------------------------------------------

    def start(self, ex: Exchange) -> None:
        """Run the chain for `ex`; `ex.done(ex)` is called once when it is answered."""
        ex.chain = self
        pending = self._run(ex, 0)
        if pending is not None:
            self._spawn(ex, *pending)

    def _spawn(self, ex: Exchange, i: int, awaitable: Awaitable[Any]) -> None:
        """The rest of the chain in a task, from step `i` whose awaitable is pending."""
        task = asyncio.get_running_loop().create_task(self._wait(ex, i, awaitable))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)

    def _run(self, ex: Exchange, i: int) -> tuple[int, Awaitable[Any]] | None:
        """Steps from `i` while each answers at once; (step, awaitable) at one that waits.
        Written for few bytecodes per step: it runs the rest of every resumed request."""
        try:
            for i, step in self._from[i]:  # noqa: B007, B020 - `i` names the step that answered
                verdict = step(ex)
                if verdict is not None:
                    break
            else:
                self._respond(ex, problem_answer(Problem(404, "no route matches this path"), ex))
                return None
        except Problem as problem:
            self._respond(ex, problem_answer(problem, ex))
            return None
        except Exception:
            self._respond(ex, crash_answer(ex, self.names[i], "on_request"))
            return None
        if verdict is SUSPEND:
            ex.step = i
            return None
        if verdict is RELAY or isinstance(verdict, Answer):
            self._respond(ex, verdict)
            return None
        ex.step = i
        return i, verdict

    async def _wait(self, ex: Exchange, i: int, awaitable: Awaitable[Any]) -> None:
        """The rest of the chain in a task, from step `i` whose awaitable is pending."""
        token = correlation_id.set(ex.rid)
        try:
            while True:
                try:
                    verdict = await awaitable
                except Problem as problem:
                    self._respond(ex, problem_answer(problem, ex))
                    return
                except Exception:
                    self._respond(ex, crash_answer(ex, self.names[i], "on_request"))
                    return
                if verdict is None:
                    pending = self._run(ex, i + 1)
                    if pending is None:
                        return
                    i, awaitable = pending
                    continue
                if verdict is not SUSPEND:
                    self._respond(ex, verdict)
                return
        finally:
            correlation_id.reset(token)

    def relay(self, ex: Exchange) -> None:
        """`resume(ex, RELAY)` for the common case: the upstream's answer (`ex.response`)."""
        ex.status = ex.response.status
        if self.heads:
            self.run_heads(ex)
        ex.done(ex)  # type: ignore[misc]

    def proceed(self, ex: Exchange) -> None:
        """`resume(ex, None)` for a step whose callback decided to go on (the Redis limit's):
        the steps after it, with no checks of a verdict that is known to be None."""
        pending = self._run(ex, ex.step + 1)
        if pending is not None:
            self._spawn(ex, *pending)

    def resume(self, ex: Exchange, verdict: Any) -> None:
        """A step that returned SUSPEND decided (from its callback): go on from there.
        `verdict` is what that step would have returned, or a Problem to answer."""
        if isinstance(verdict, Problem):
            self._respond(ex, problem_answer(verdict, ex))
            return
        if verdict is None:
            self.proceed(ex)
            return
        if verdict is SUSPEND:
            return
        if verdict is RELAY or isinstance(verdict, Answer):
            self._respond(ex, verdict)
            return
        self._spawn(ex, ex.step, verdict)

    def crashed(self, ex: Exchange, name: str) -> None:
        """A SUSPENDed policy's callback raised: the 500 answer (see `crash_answer`)."""
        self._respond(ex, crash_answer(ex, name, "on_request"))

    # --- the answer -------------------------------------------------------------------------

    def _respond(self, ex: Exchange, verdict: Any) -> None:
        """Record the answer, run the response-head phases, hand it to the adapter."""
        if verdict is RELAY:
            ex.status = ex.response.status
        else:
            ex.answer = verdict
            ex.status = verdict.status
        if self.heads:
            self.run_heads(ex)
        done = ex.done
        assert done is not None
        done(ex)

    def run_heads(self, ex: Exchange) -> None:
        for head, name in self.heads:
            try:
                head(ex)
            except Exception:
                if ex.response is not None and ex.answer is None:
                    ex.response.close()
                ex.response = None
                ex.answer = crash_answer(ex, name, "on_response_head")
                ex.status = 500
                ex.response_extra = []
                ex.response_drop = None
                return

    def body(self, ex: Exchange, chunk: bytes, last: bool) -> bytes:
        """The body phases over one chunk (adapters call it only when `bodies` is not empty)."""
        for on_body, name in self.bodies:
            try:
                chunk = on_body(ex, chunk, last)
            except Exception:
                crash_answer(ex, name, "on_response_body")  # too late to answer: logged
                raise
        return chunk

    def log(self, ex: Exchange) -> None:
        """The log phases, after the last byte; a failure is logged, never raised."""
        for on_log, name in self.logs:
            try:
                on_log(ex)
            except Exception:
                log.exception("policy %s failed in on_log", name, extra={"policy": name})


async def run_to_end(chain: Chain, ex: Exchange) -> Exchange:
    """Run `chain` for `ex` from a coroutine and wait for its answer (the aiohttp adapter's
    and aggregate parts' way in): the same runner, `done` completing a future."""
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[None] | None = None
    finished = False

    def done(_ex: Exchange) -> None:
        nonlocal finished
        finished = True
        if answered is not None and not answered.done():
            answered.set_result(None)

    ex.done = done
    chain.start(ex)
    if not finished:
        answered = loop.create_future()
        await answered
    return ex
