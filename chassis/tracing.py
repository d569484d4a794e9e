"""OpenTelemetry tracing for every service, off unless `PORTICO_TRACING` asks for it.

`PORTICO_TRACING`: unset or `off` (default) - `setup` returns at once, nothing from
OpenTelemetry is imported and nothing is wrapped, so the hot path pays one bool check;
`otlp` - spans go over OTLP/HTTP to `OTEL_EXPORTER_OTLP_ENDPOINT` (the SDK's own variables);
`file` - spans are appended as JSON lines to `var/traces/<service>.jsonl`.
Tests pass their own exporter (e.g. the SDK's InMemorySpanExporter) to `setup`.

W3C `traceparent` carries the context: HTTP through the maintained instrumentations (Flask,
aiohttp server and client) plus the gateway's own transport (`client_span`), events through
the `traceparent` message header (captured when the outbox row is written, see
`current_traceparent`, and restored by the consumer, see `consumer_span`). Work a request
starts and a background task carries on (the orders saga) stores the request's
`traceparent` with its state and runs each later step in a `resumed_span` of it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

__all__ = [
    "ENABLED",
    "TRACEPARENT",
    "client_span",
    "consumer_span",
    "current_traceparent",
    "instrument_engine",
    "mode",
    "producer_span",
    "reset",
    "resumed_span",
    "setup",
    "wanted",
]

TRACEPARENT = "traceparent"
ENV = "PORTICO_TRACING"
MODES = ("off", "otlp", "file")

# True once `setup` installed a tracer provider; every hook checks it first.
ENABLED = False

_lock = threading.Lock()
_providers: dict[str, Any] = {}  # service -> TracerProvider (one per service: its resource)
_global_instrumented = False


def mode(environ: Mapping[str, str] | None = None) -> str:
    """The configured mode; ValueError for an unknown one (fail at start, not silently)."""
    value = (environ if environ is not None else os.environ).get(ENV, "").strip().lower()
    value = value or "off"
    if value not in MODES:
        raise ValueError(f"{ENV} must be one of {', '.join(MODES)}, not {value!r}")
    return value


def wanted() -> bool:
    """Tracing is configured (or already set up): worth instrumenting a new engine."""
    return ENABLED or mode() != "off"


def setup(service: str, app: Any = None, *, exporter: Any = None) -> bool:
    """Instrument `app` (Flask or aiohttp) of `service` when tracing is on; True if it is.

    Call once from the app factory after `chassis.*.install`. `exporter` (tests) forces
    tracing on with that SpanExporter, whatever the environment says.
    """
    global ENABLED
    if exporter is None and mode() == "off":
        return False
    provider = _provider(service, exporter)
    ENABLED = True
    if app is not None:
        _instrument_app(app, provider)
    return True


def _provider(service: str, exporter: Any) -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    global _global_instrumented
    with _lock:
        provider = _providers.get(service)
        if provider is not None:
            return provider
        provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: service}), sampler=_sampler()
        )
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif mode() == "file":
            provider.add_span_processor(BatchSpanProcessor(JsonLinesExporter(service)))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _providers[service] = provider
        if not _global_instrumented:
            # The first service of the process owns the global provider: library spans
            # (aiohttp client, Redis, SQLAlchemy, our messaging spans) use it.
            trace.set_tracer_provider(provider)
            _instrument_libraries()
            _global_instrumented = True
        return provider


def _sampler() -> Any:
    """Parent-based; a new trace starts only at a request or a message, so the background
    pollers (outbox relay, saga driver, broker polling) do not flood the exporter with
    root database and Redis spans several times a second."""
    from opentelemetry.sdk.trace.sampling import (
        Decision,
        ParentBased,
        Sampler,
        SamplingResult,
    )
    from opentelemetry.trace import SpanKind

    starts = (SpanKind.SERVER, SpanKind.PRODUCER, SpanKind.CONSUMER)

    class EntryPoints(Sampler):
        def should_sample(  # type: ignore[no-untyped-def]
            self, parent_context, trace_id, name, kind=None, attributes=None, links=None, **_kw
        ) -> SamplingResult:
            keep = kind in starts
            return SamplingResult(Decision.RECORD_AND_SAMPLE if keep else Decision.DROP)

        def get_description(self) -> str:
            return "PorticoEntryPoints"

    return ParentBased(root=EntryPoints())


def _instrument_libraries() -> None:
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    AioHttpClientInstrumentor().instrument()
    RedisInstrumentor().instrument()
    # The server instrumentor initialises the state its middleware reads, and would also
    # swap `web.Application` for a subclass adding the middleware to apps built later: undo
    # that, `_instrument_app` adds it to each app (already built) with its service's provider.
    from aiohttp import web
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    server = AioHttpServerInstrumentor()
    with warnings.catch_warnings():  # aiohttp discourages the subclass we undo below
        warnings.simplefilter("ignore", DeprecationWarning)
        server.instrument()
    web.Application = server._original_app  # type: ignore[misc]


def _instrument_app(app: Any, provider: Any) -> None:
    from aiohttp import web

    if isinstance(app, web.Application):
        from opentelemetry.instrumentation.aiohttp_server import create_aiohttp_middleware

        # First, so the server span encloses the chassis middleware (ids, logs, problems).
        app.middlewares.insert(0, create_aiohttp_middleware(tracer_provider=provider))
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor().instrument_app(
        app, tracer_provider=provider, excluded_urls="/health/.*,/metrics"
    )


def instrument_engine(engine: Any) -> None:
    """SQLAlchemy spans for `engine` (sync or async) when tracing is wanted; else nothing.

    Called by `chassis.db` for every engine it makes. The instrumentor itself instruments
    one engine per process (it is a singleton), so its per-engine tracer is used directly.
    """
    if not wanted():
        return
    from opentelemetry import metrics, trace
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    scope = "opentelemetry.instrumentation.sqlalchemy"
    usage = metrics.get_meter(scope).create_up_down_counter(
        "db.client.connections.usage", unit="connections"
    )
    sync_engine = getattr(engine, "sync_engine", engine)
    EngineTracer(trace.get_tracer(scope), sync_engine, usage)


def reset() -> None:
    """Tests: uninstrument, drop providers and the global one, tracing off again."""
    global ENABLED, _global_instrumented
    from opentelemetry import trace

    with _lock:
        if _global_instrumented:
            from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
            from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
            from opentelemetry.instrumentation.redis import RedisInstrumentor

            AioHttpClientInstrumentor().uninstrument()
            RedisInstrumentor().uninstrument()
            AioHttpServerInstrumentor().uninstrument()
        for provider in _providers.values():
            provider.shutdown()
        _providers.clear()
        _global_instrumented = False
        ENABLED = False
        # The API allows one global provider per process; tests need a fresh one each time.
        from opentelemetry.util._once import Once

        trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
        trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


# -- spans of our own ---------------------------------------------------------------------


def current_traceparent() -> str | None:
    """The active span's `traceparent` (to store with an outbox row), or None."""
    if not ENABLED:
        return None
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT)


def _tracer(name: str) -> Any:
    """A tracer of the current span's service (several services share a process in tests)."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME

    resource = getattr(trace.get_current_span(), "resource", None)
    provider = _providers.get(resource.attributes.get(SERVICE_NAME)) if resource else None
    return provider.get_tracer(name) if provider else trace.get_tracer(name)


@contextlib.contextmanager
def client_span(name: str, headers: MutableMapping[str, str], **attrs: Any) -> Iterator[None]:
    """A CLIENT span around an outbound call whose `headers` get its `traceparent`."""
    from opentelemetry import propagate, trace

    tracer = _tracer("portico.http")
    with tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes=attrs):
        propagate.inject(headers)
        yield


@contextlib.contextmanager
def producer_span(
    name: str, traceparent: str | None, headers: MutableMapping[str, Any], **attrs: Any
) -> Iterator[None]:
    """A PRODUCER span, child of the stored `traceparent`, injected into message `headers`."""
    from opentelemetry import propagate, trace

    parent = propagate.extract({TRACEPARENT: traceparent}) if traceparent else None
    tracer = trace.get_tracer("portico.messaging")
    with tracer.start_as_current_span(
        name, context=parent, kind=trace.SpanKind.PRODUCER, attributes=attrs
    ):
        propagate.inject(headers)
        yield


@contextlib.contextmanager
def consumer_span(
    name: str, headers: Mapping[str, Any], *, service: str | None = None, **attrs: Any
) -> Iterator[None]:
    """A CONSUMER span continuing the trace whose `traceparent` the message carries.

    `service`: whose span it is, when several services share the process (tests)."""
    from opentelemetry import propagate, trace

    carrier = {k: str(v) for k, v in headers.items() if k in (TRACEPARENT, "tracestate")}
    tracer = _service_tracer(service, "portico.messaging")
    with tracer.start_as_current_span(
        name, context=propagate.extract(carrier), kind=trace.SpanKind.CONSUMER, attributes=attrs
    ):
        yield


@contextlib.contextmanager
def resumed_span(
    name: str, traceparent: str | None, *, service: str | None = None, **attrs: Any
) -> Iterator[Any]:
    """An INTERNAL span whose parent is a stored `traceparent`: a step of work that a request
    started and a background task runs later (a saga step after a sweep, a retry or a
    restart), so it stays in that request's trace - its child, not merely a link.

    Without a stored `traceparent` the current context is the parent (a root span in a
    background task, which the sampler drops). Yields the span, or None with tracing off.
    """
    if not ENABLED:
        yield None
        return
    from opentelemetry import propagate, trace

    parent = propagate.extract({TRACEPARENT: traceparent}) if traceparent else None
    tracer = _service_tracer(service, "portico.background")
    with tracer.start_as_current_span(
        name, context=parent, kind=trace.SpanKind.INTERNAL, attributes=attrs
    ) as span:
        yield span


def _service_tracer(service: str | None, name: str) -> Any:
    """The tracer of `service`'s provider when this process set one up, else the global one."""
    from opentelemetry import trace

    provider = _providers.get(service) if service else None
    return provider.get_tracer(name) if provider else trace.get_tracer(name)


# -- the `file` exporter ------------------------------------------------------------------


class JsonLinesExporter:
    """Appends finished spans as JSON lines to `var/traces/<service>.jsonl` (dev, no collector)."""

    def __init__(self, service: str, directory: str | Path = "var/traces") -> None:
        self.path = Path(directory) / f"{service}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = [span.to_json(indent=None) + "\n" for span in spans]
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.writelines(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
