"""Feature flags from a file, evaluated the same way by the gateway and every service.

The file (YAML or JSON - JSON is YAML) is named by `PORTICO_FLAGS_FILE` (default `flags.yaml`
in the working directory; a missing *default* file means no flags, every flag off)::

    flags:
      catalog.v2_products:
        enabled: true          # the switch: false is off for everyone, allow lists included
        percent: 25            # share of ids that get it, 0..100 (2 places); default 100
        by: client             # which id the percentage hashes: client (default) or user
        allow:                 # always on for these (when enabled), whatever the percentage
          clients: [shop-web]
          users: [alice]
        salt: v2-2027          # optional; default the flag's name

`is_enabled(name, user=..., client=...)` is the one function everybody calls. An id is in a
flag's rollout when sha256(salt + ":" + id), read as a number, falls in the first `percent`
of 10,000 buckets: the same id always gets the same answer, a bigger percentage only adds
ids, and salting per flag keeps one flag's early adopters from being every flag's.

Reload: every `PORTICO_FLAGS_RELOAD_INTERVAL` seconds (default 2) at most, an evaluation stats
the file; a changed mtime, size or inode reloads it. A file that does not parse, or breaks a
rule, keeps the last good flags; the error is logged once per change of the file and counted
(`portico_flags_reload_errors_total`). At start-up (`FlagStore.from_env`) a bad file, or a
named file that is missing, is a `ConfigError`: nothing serves with flags it cannot read.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .settings import ConfigError

__all__ = [
    "DEFAULT_FLAGS_FILE",
    "DEFAULT_RELOAD_INTERVAL",
    "Flag",
    "FlagCollector",
    "FlagStore",
    "check_flags_file",
    "default_store",
    "in_rollout",
    "is_enabled",
    "parse_flags",
]

log = logging.getLogger("portico.flags")

DEFAULT_FLAGS_FILE = "flags.yaml"
DEFAULT_RELOAD_INTERVAL = 2.0
BUCKETS = 10_000  # percent with 2 places: 0.01 % is one bucket
MAX_FLAGS = 1_000
MAX_ALLOW = 10_000  # ids per allow list
MAX_ID = 256  # characters of a user or client id, a flag name, a salt
MAX_FILE_BYTES = 1024 * 1024
_BY = ("client", "user")
_FLAG_KEYS = frozenset({"enabled", "percent", "by", "allow", "salt", "description"})


@dataclass(frozen=True, slots=True)
class Flag:
    """One flag, as loaded: `threshold` is `percent` in buckets (0..BUCKETS)."""

    name: str
    enabled: bool
    threshold: int
    by: str
    users: frozenset[str]
    clients: frozenset[str]
    salt: bytes

    @property
    def percent(self) -> float:
        return self.threshold / 100


def in_rollout(salt: bytes, ident: str, threshold: int) -> bool:
    """Whether `ident` falls in the first `threshold` of BUCKETS for this salt (stable)."""
    if threshold >= BUCKETS:
        return True
    if threshold <= 0:
        return False
    digest = hashlib.sha256(salt + b":" + ident.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS < threshold


def evaluate(flag: Flag | None, user: str | None, client: str | None) -> bool:
    """The rule, in order: unknown or disabled - off; allow-listed - on; else the rollout of
    the flag's `by` id (no such id: off unless the flag is at 100 %)."""
    if flag is None or not flag.enabled:
        return False
    if (user is not None and user in flag.users) or (client is not None and client in flag.clients):
        return True
    if flag.threshold >= BUCKETS:
        return True
    ident = client if flag.by == "client" else user
    if not ident:
        return False
    return in_rollout(flag.salt, ident, flag.threshold)


# --- the file ------------------------------------------------------------------------------


def _ids(value: Any, where: str, errors: list[str]) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        errors.append(f"{where}: must be a list of ids")
        return frozenset()
    if len(value) > MAX_ALLOW:
        errors.append(f"{where}: at most {MAX_ALLOW} ids")
        return frozenset()
    good = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not 0 < len(item) <= MAX_ID:
            errors.append(f"{where}[{i}]: must be a non-empty string of at most {MAX_ID}")
        else:
            good.append(item)
    return frozenset(good)


def _percent(value: Any, where: str, errors: list[str]) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.append(f"{where}: must be a number 0..100")
        return 0
    if not math.isfinite(value) or not 0 <= value <= 100:
        errors.append(f"{where}: must be 0..100")
        return 0
    buckets = value * 100
    if abs(buckets - round(buckets)) > 1e-6:
        errors.append(f"{where}: at most 2 decimal places")
        return 0
    return round(buckets)


def _flag(name: str, raw: Any, errors: list[str]) -> Flag | None:
    where = f"flags.{name}"
    if not 0 < len(name) <= MAX_ID or not name.isprintable() or " " in name:
        errors.append(f"{where}: a flag name is 1..{MAX_ID} printable characters, no spaces")
        return None
    if isinstance(raw, bool):  # `flag: true` is shorthand for {enabled: true}
        raw = {"enabled": raw}
    if not isinstance(raw, dict):
        errors.append(f"{where}: must be true, false or a mapping")
        return None
    before = len(errors)
    for key in sorted(str(k) for k in raw if k not in _FLAG_KEYS):
        errors.append(f"{where}.{key}: unknown key (known: {', '.join(sorted(_FLAG_KEYS))})")
    enabled = raw.get("enabled", False)
    if not isinstance(enabled, bool):
        errors.append(f"{where}.enabled: must be true or false")
    threshold = _percent(raw.get("percent", 100), f"{where}.percent", errors)
    by = raw.get("by", "client")
    if by not in _BY:
        errors.append(f"{where}.by: must be one of {', '.join(_BY)}")
    allow = raw.get("allow") or {}
    users: frozenset[str] = frozenset()
    clients: frozenset[str] = frozenset()
    if not isinstance(allow, dict):
        errors.append(f"{where}.allow: must be a mapping with users and/or clients")
    else:
        for key in sorted(str(k) for k in allow if k not in ("users", "clients")):
            errors.append(f"{where}.allow.{key}: unknown key (known: clients, users)")
        users = _ids(allow.get("users"), f"{where}.allow.users", errors)
        clients = _ids(allow.get("clients"), f"{where}.allow.clients", errors)
    salt = raw.get("salt", name)
    if not isinstance(salt, str) or not 0 < len(salt) <= MAX_ID:
        errors.append(f"{where}.salt: must be a non-empty string of at most {MAX_ID}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        errors.append(f"{where}.description: must be a string")
    if len(errors) > before:
        return None
    return Flag(name, enabled, threshold, by, users, clients, salt.encode())


def parse_flags(raw: Any) -> tuple[dict[str, Flag], list[str]]:
    """The flags of a parsed document and every problem as `key.path: message` lines."""
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        return {}, ["<root>: the document must be a mapping with a `flags` key"]
    extra = sorted(str(k) for k in raw if k != "flags")
    errors = [f"{k}: unknown key (known: flags)" for k in extra]
    section = raw.get("flags") or {}
    if not isinstance(section, dict):
        return {}, [*errors, "flags: must be a mapping of flag name to its rule"]
    if len(section) > MAX_FLAGS:
        return {}, [*errors, f"flags: at most {MAX_FLAGS} flags"]
    flags: dict[str, Flag] = {}
    for name, rule in section.items():
        flag = _flag(str(name), rule, errors)
        if flag is not None:
            flags[flag.name] = flag
    return flags, errors


def _read(path: Path) -> tuple[dict[str, Flag], list[str]]:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return {}, [f"<file>: cannot read {path}: {exc.strerror}"]
    if len(data) > MAX_FILE_BYTES:
        return {}, [f"<file>: {path} is larger than {MAX_FILE_BYTES} bytes"]
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        return {}, [f"<file>: {path} is not valid YAML or JSON: {exc}".replace("\n", " ")]
    return parse_flags(raw)


def check_flags_file(path: str | os.PathLike[str]) -> list[str]:
    """Every problem of a flags file (`python -m gateway check` reports them); [] when good."""
    return _read(Path(path))[1]


# --- the store -----------------------------------------------------------------------------


class FlagCollector(Collector):
    """`portico_flags_reload_errors_total` and `portico_flags_loaded` of the store `get`
    returns at scrape time (None: no store yet, nothing to report)."""

    def __init__(self, get: Callable[[], FlagStore | None]) -> None:
        self._get = get

    def collect(self) -> Iterator[Metric]:
        store = self._get()
        if store is None:
            return
        errors = CounterMetricFamily(
            "portico_flags_reload_errors",
            "Flag files that could not be loaded (the last good flags stayed)",
        )
        errors.add_metric([], store.errors)
        loaded = GaugeMetricFamily("portico_flags_loaded", "Flags currently loaded")
        loaded.add_metric([], len(store.flags))
        yield errors
        yield loaded


class FlagStore:
    """The flags of one file, re-read when it changes (checked at most every `interval` s)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        interval: float = DEFAULT_RELOAD_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.interval = interval
        self.flags: Mapping[str, Flag] = {}
        self.errors = 0  # files refused since start
        self._clock = clock
        self._next = 0.0
        self._seen: tuple[int, int, int] | None = None  # mtime_ns, size, inode
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FlagStore:
        """PORTICO_FLAGS_FILE and PORTICO_FLAGS_RELOAD_INTERVAL, checked and loaded now."""
        env = os.environ if environ is None else environ
        named = env.get("PORTICO_FLAGS_FILE") or None
        raw_interval = env.get("PORTICO_FLAGS_RELOAD_INTERVAL") or str(DEFAULT_RELOAD_INTERVAL)
        try:
            interval = float(raw_interval)
        except ValueError:
            interval = -1.0
        if not math.isfinite(interval) or interval <= 0:
            raise ConfigError("PORTICO_FLAGS_RELOAD_INTERVAL: must be a number of seconds > 0")
        path = Path(named or DEFAULT_FLAGS_FILE)
        if named is None and not path.exists():
            return cls(None, interval=interval)  # no file, no flags: every flag is off
        store = cls(path, interval=interval)
        problems = store.reload()
        if problems:
            raise ConfigError(f"PORTICO_FLAGS_FILE {path}: " + "; ".join(problems))
        return store

    def reload(self) -> list[str]:
        """Read the file now; on a problem keep the flags and return the problems."""
        if self.path is None:
            return []
        with self._lock:
            try:
                st = self.path.stat()
                self._seen = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                self._seen = None
            flags, problems = _read(self.path)
            self._next = self._clock() + self.interval
            if problems:
                self.errors += 1
                log.error(
                    "flags file %s refused, the last good flags stay: %s",
                    self.path,
                    "; ".join(problems),
                )
                return problems
            if flags != self.flags:
                log.info("flags loaded from %s: %d flag(s)", self.path, len(flags))
            self.flags = flags
            return []

    def _maybe_reload(self) -> None:
        """At most once per interval: a stat, and a reload only if the file changed."""
        path = self.path
        if path is None:
            return
        now = self._clock()
        with self._lock:
            if now < self._next:
                return
            self._next = now + self.interval
            try:
                st = path.stat()
                seen: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                seen = None
            if seen == self._seen:
                return
            if seen is None:  # gone (being replaced?): keep the flags, look again later
                self._seen = None
                return
        self.reload()

    def is_enabled(self, name: str, *, user: str | None = None, client: str | None = None) -> bool:
        """Whether flag `name` is on for this user / client (see the module's rules)."""
        if self._clock() >= self._next:
            self._maybe_reload()
        return evaluate(self.flags.get(name), user, client)

    def register_metrics(self, registry: CollectorRegistry) -> None:
        registry.register(FlagCollector(lambda: self))


_default: FlagStore | None = None
_default_lock = threading.Lock()


def default_store() -> FlagStore:
    """The process's store, from the environment on first use (ConfigError when bad)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = FlagStore.from_env()
    return _default


def is_enabled(name: str, *, user: str | None = None, client: str | None = None) -> bool:
    """The one evaluation every part of Portico uses: `default_store().is_enabled(...)`."""
    return default_store().is_enabled(name, user=user, client=client)
