"""JSON log lines that carry the request's correlation id.

The id lives in a context variable so that every line logged while serving a request, in
Flask threads or aiohttp tasks alike, carries it without being passed around.

Lines are written by `JsonLineHandler`. Off an event loop (Flask threads) a line is written
at once, as a StreamHandler would. On a loop thread the caller only formats and queues it; a
daemon thread writes what has queued up in one syscall every few milliseconds, so a slow
stderr reader never stalls the loop. Queued lines are flushed at exit and before any ERROR
line; a process killed with SIGKILL may lose the lines of its last moment.
`fast_json_handler(logger)` lets a hot path (the per-request access log) skip the LogRecord
machinery when the chassis handler is the only one that would see the record.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import re
import sys
import threading
import time
from asyncio import _get_running_loop
from collections import deque
from contextvars import ContextVar
from typing import IO, Any

import orjson

__all__ = [
    "REQUEST_ID_HEADER",
    "JsonFormatter",
    "JsonLineHandler",
    "accept_request_id",
    "configure_logging",
    "correlation_id",
    "fast_json_handler",
    "new_request_id",
    "timestamp",
]

REQUEST_ID_HEADER = "X-Request-ID"
correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)

# A client-supplied id is echoed into logs and headers, so only a short, inert token is accepted.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class _IdSource:
    """Request ids: a random per-process prefix (renewed in forked children) and a counter.

    As unique as uuid4 across processes (64 random bits per process) at a fraction of its cost.
    """

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count(1)


_ids = _IdSource()


def new_request_id() -> str:
    return f"{_ids.prefix}{next(_ids.counter):016x}"  # 32 hex digits, like uuid4().hex


def accept_request_id(value: str | None) -> str:
    """The caller's id when it is safe to echo, else a fresh one."""
    if value and _SAFE_ID.fullmatch(value):
        return value
    return new_request_id()


class JsonFormatter(logging.Formatter):
    """One JSON object a line; `extra=` fields become top-level keys."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        return self.document(record).decode()

    def document(self, record: logging.LogRecord) -> bytes:
        doc = _head(record.created, record.levelname.lower(), self.service, record.name)
        doc["msg"] = record.getMessage()
        cid = correlation_id.get()
        if cid:
            doc["correlation_id"] = cid
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str)


# (second, "YYYY-MM-DDTHH:MM:SS.") and (millisecond, the whole stamp): each replaced as one
# tuple, so a thread never pairs one stamp's key with another's text.
_ts_second: tuple[int, str] = (-1, "")
_ts_milli: tuple[int, str] = (-1, "")


def timestamp(created: float) -> str:
    """ISO 8601 UTC with milliseconds, formatted once per millisecond (a busy gateway writes
    several lines in each), the date and time once per second."""
    global _ts_second, _ts_milli
    milli = int(created * 1000)
    cached = _ts_milli
    if cached[0] == milli:
        return cached[1]
    second, ms = divmod(milli, 1000)
    prefix = _ts_second
    if prefix[0] != second:
        prefix = _ts_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)))
    text = f"{prefix[1]}{ms:03d}Z"
    _ts_milli = (milli, text)
    return text


def _head(created: float, level: str, service: str, logger: str) -> dict[str, Any]:
    """The first keys of every line, in order."""
    return {"ts": timestamp(created), "level": level, "service": service, "logger": logger}


class _LineWriter:
    """Lines for one stream. Off an event loop they are written at once, in the caller's
    thread (as a StreamHandler would); on a loop thread they are queued and a daemon thread
    writes whatever has queued up in one syscall, so a slow reader never stalls the loop."""

    _BATCH_DELAY = 0.05  # seconds: a loop's lines are written at most this long after
    _MAX_QUEUED = 50_000  # past this many queued lines the caller writes them itself

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        # Only the process' own stderr is written by descriptor: a borrowed stream's descriptor
        # (a test's capture file) may be closed and reused by the time the writer runs.
        self._fd = 2 if stream is sys.__stderr__ else None
        self._start()
        os.register_at_fork(after_in_child=self._start)
        atexit.register(self.flush)

    def _start(self) -> None:
        # Also the fork hook: the parent's queue and writer thread are not the child's.
        self._queue: deque[bytes] = deque()
        self._io_lock = threading.Lock()
        self._wake = threading.Event()
        self._woken = False
        self._thread: threading.Thread | None = None

    def write(self, line: bytes) -> None:
        queue = self._queue
        queue.append(line)
        if self._woken:  # a batch is already due: the common case under load
            if len(queue) > self._MAX_QUEUED:
                self.flush()  # the writer fell behind: back-pressure, not unbounded memory
            return
        loop = _get_running_loop()
        if loop is None:
            self.flush()  # no loop to protect: write now, as a StreamHandler would
            return
        self._woken = True
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="portico-log-writer")
            self._thread.daemon = True
            self._thread.start()
        loop.call_later(self._BATCH_DELAY, self._wake.set)  # one wake-up per batch

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self._woken = False
            self.flush()

    def flush(self) -> None:
        with self._io_lock:
            queue = self._queue
            parts = []
            while queue:
                parts.append(queue.popleft())
            if parts:
                self._emit(b"".join(parts))

    def _emit(self, data: bytes) -> None:
        try:
            if self._fd is None:
                self._stream.write(data.decode(errors="replace"))
                self._stream.flush()
                return
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except (OSError, ValueError):
            pass  # stderr closed or gone: nothing sensible left to report the failure on


_writers: dict[int, tuple[IO[str], _LineWriter]] = {}


def _writer_for(stream: IO[str]) -> _LineWriter:
    """One writer per stream, however often `configure_logging` runs (tests: per app)."""
    known = _writers.get(id(stream))
    if known is None or known[0] is not stream:
        known = _writers[id(stream)] = (stream, _LineWriter(stream))
    return known[1]


class JsonLineHandler(logging.Handler):
    """The chassis' log handler: JSON lines (JsonFormatter) through a batching writer thread."""

    def __init__(self, service: str, stream: IO[str] | None = None) -> None:
        super().__init__()
        self.service = service
        self.json_formatter = JsonFormatter(service)
        self.setFormatter(self.json_formatter)
        self._writer = _writer_for(stream if stream is not None else sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.formatter is self.json_formatter:
                line = self.json_formatter.document(record) + b"\n"
            else:
                line = (self.format(record) + "\n").encode()
            self._writer.write(line)
            if record.levelno >= logging.ERROR:
                self._writer.flush()  # a crash report is out before the process may die
        except Exception:
            self.handleError(record)

    def write_fields(self, logger: str, level: str, msg: str, fields: dict[str, Any]) -> None:
        """The line `logger.<level>(msg, extra=fields)` would write, without a LogRecord."""
        doc = {
            "ts": timestamp(time.time()),
            "level": level,
            "service": self.service,
            "logger": logger,
            "msg": msg,
        }
        cid = correlation_id.get()
        if cid:
            doc["correlation_id"] = cid
        doc.update(fields)
        self.write_document(doc)

    def write_document(self, doc: dict[str, Any]) -> None:
        """A whole line's document, its `_head` keys first, as the caller built it."""
        self._writer.write(orjson.dumps(doc, default=str, option=orjson.OPT_APPEND_NEWLINE))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.flush()
        super().close()


def fast_json_handler(logger: logging.Logger, level: int) -> JsonLineHandler | None:
    """The one chassis handler `logger`'s records at `level` would reach, else None.

    None when the logger is off for `level`, has filters, or when any other handler (a test's
    log capture, a custom set-up) would see the record: callers then log the usual way.
    Checked on every call (handlers come and go), so it is written for the common chain:
    loggers without handlers up to the root's single chassis handler.
    """
    if not logger.isEnabledFor(level) or logger.filters:
        return None
    found: JsonLineHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        handlers = current.handlers
        if handlers:
            if found is not None or len(handlers) != 1:
                return None
            handler = handlers[0]
            if (
                type(handler) is not JsonLineHandler
                or handler.filters
                or level < handler.level
                or handler.formatter is not handler.json_formatter
            ):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route the root logger to stderr as JSON lines; idempotent."""
    root = logging.getLogger()
    for old in root.handlers:
        old.flush()
    handler = JsonLineHandler(service, sys.stderr)
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "gunicorn.access"):
        logging.getLogger(noisy).disabled = True
