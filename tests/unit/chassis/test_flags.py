"""chassis.flags: each rollout rule, reload, and a bad file keeping the last good flags."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from chassis import ConfigError
from chassis.flags import FlagStore, check_flags_file, in_rollout, parse_flags


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, text: str, *, bump: int = 0) -> None:
    path.write_text(text, encoding="utf-8")
    if bump:  # a distinct mtime even on coarse file systems
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))


def store_for(tmp_path: Path, text: str, clock: Clock | None = None) -> FlagStore:
    path = tmp_path / "flags.yaml"
    write(path, text)
    store = FlagStore(path, interval=2.0, clock=clock or Clock())
    assert store.reload() == []
    return store


def test_on_is_on_for_everyone_and_anonymous(tmp_path: Path) -> None:
    store = store_for(tmp_path, "flags: {f: {enabled: true}}")
    assert store.is_enabled("f", client="a")
    assert store.is_enabled("f", user="u")
    assert store.is_enabled("f")


def test_off_is_off_even_for_the_allow_list(tmp_path: Path) -> None:
    store = store_for(
        tmp_path, "flags: {f: {enabled: false, allow: {clients: [a], users: [u]}}, g: false}"
    )
    assert not store.is_enabled("f", client="a", user="u")
    assert not store.is_enabled("g", client="a")


def test_unknown_flag_is_off(tmp_path: Path) -> None:
    store = store_for(tmp_path, "flags: {}")
    assert not store.is_enabled("nope", client="a")


def test_percentage_lands_within_bounds_and_is_stable_per_id(tmp_path: Path) -> None:
    store = store_for(tmp_path, "flags: {f: {enabled: true, percent: 30}}")
    ids = [f"client-{i}" for i in range(10_000)]
    first = [store.is_enabled("f", client=c) for c in ids]
    share = sum(first) / len(ids)
    assert 0.28 <= share <= 0.32  # binomial sd ~0.46 points: 4 sd either side
    assert [store.is_enabled("f", client=c) for c in ids] == first  # same id, same answer
    # a bigger percentage only adds ids
    wider = [in_rollout(b"f", c, 5000) for c in ids]
    assert all(w for f, w in zip(first, wider, strict=True) if f)


def test_percentage_is_salted_per_flag(tmp_path: Path) -> None:
    store = store_for(
        tmp_path, "flags: {a: {enabled: true, percent: 50}, b: {enabled: true, percent: 50}}"
    )
    ids = [f"c{i}" for i in range(2000)]
    a = [store.is_enabled("a", client=c) for c in ids]
    b = [store.is_enabled("b", client=c) for c in ids]
    both = sum(x and y for x, y in zip(a, b, strict=True)) / len(ids)
    assert 0.20 <= both <= 0.30  # independent halves overlap on ~a quarter, not on a half


def test_percentage_by_user_and_missing_id(tmp_path: Path) -> None:
    store = store_for(tmp_path, "flags: {f: {enabled: true, percent: 50, by: user}}")
    users = [f"u{i}" for i in range(400)]
    on = [u for u in users if store.is_enabled("f", user=u, client="same-app")]
    assert 0 < len(on) < len(users)  # the client id is not what is hashed
    assert not store.is_enabled("f", client="same-app")  # no user id: not in a partial rollout
    assert store_for(tmp_path, "flags: {f: {enabled: true, percent: 0}}").is_enabled("f") is False


def test_allow_list_beats_the_percentage(tmp_path: Path) -> None:
    store = store_for(
        tmp_path,
        "flags: {f: {enabled: true, percent: 0, allow: {clients: [shop-web], users: [alice]}}}",
    )
    assert store.is_enabled("f", client="shop-web")
    assert store.is_enabled("f", user="alice", client="other")
    assert not store.is_enabled("f", client="other")
    assert not store.is_enabled("f", user="bob")


def test_json_file_too(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write(path, '{"flags": {"f": {"enabled": true, "percent": 100}}}')
    store = FlagStore(path, clock=Clock())
    assert store.reload() == []
    assert store.is_enabled("f", client="x")


def test_reload_on_change_at_most_every_interval(tmp_path: Path) -> None:
    clock = Clock()
    store = store_for(tmp_path, "flags: {f: false}", clock)
    write(store.path, "flags: {f: true}", bump=1)  # type: ignore[arg-type]
    clock.now += 1.0
    assert not store.is_enabled("f")  # not looked at before the interval
    clock.now += 1.5
    assert store.is_enabled("f")  # seen without a restart


def test_bad_file_keeps_the_last_good_flags_and_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    store = store_for(tmp_path, "flags: {f: true}", clock)
    registry = CollectorRegistry()
    store.register_metrics(registry)
    write(store.path, "flags: {f: [unclosed", bump=1)  # type: ignore[arg-type]
    clock.now += 3
    assert store.is_enabled("f")  # the old flags stay
    assert store.errors == 1
    assert registry.get_sample_value("portico_flags_reload_errors_total") == 1
    assert "refused" in caplog.text
    clock.now += 3
    assert store.is_enabled("f")
    assert store.errors == 1  # the same bad file is not re-read and re-counted
    write(store.path, "flags: {f: {enabled: true, percent: 101}}", bump=2)  # type: ignore[arg-type]
    clock.now += 3
    assert store.is_enabled("f") and store.errors == 2  # a rule broken: refused too
    write(store.path, "flags: {f: false}", bump=3)  # type: ignore[arg-type]
    clock.now += 3
    assert not store.is_enabled("f")  # a good file again


def test_removed_file_keeps_the_flags(tmp_path: Path) -> None:
    clock = Clock()
    store = store_for(tmp_path, "flags: {f: true}", clock)
    store.path.unlink()  # type: ignore[union-attr]
    clock.now += 3
    assert store.is_enabled("f")


def test_problems_are_named_by_key_path() -> None:
    _, problems = parse_flags(
        {
            "flags": {
                "a": {"enabled": "yes", "percent": 150, "by": "ip", "colour": 1},
                "b": {"enabled": True, "percent": 12.345, "allow": {"users": ["", 3], "x": []}},
                "c": [1],
            },
            "extra": 1,
        }
    )
    assert problems == [
        "extra: unknown key (known: flags)",
        "flags.a.colour: unknown key (known: allow, by, description, enabled, percent, salt)",
        "flags.a.enabled: must be true or false",
        "flags.a.percent: must be 0..100",
        "flags.a.by: must be one of client, user",
        "flags.b.percent: at most 2 decimal places",
        "flags.b.allow.x: unknown key (known: clients, users)",
        "flags.b.allow.users[0]: must be a non-empty string of at most 256",
        "flags.b.allow.users[1]: must be a non-empty string of at most 256",
        "flags.c: must be true, false or a mapping",
    ]


def test_check_flags_file(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    write(path, "flags: {f: {enabled: true, percent: -1}}")
    assert check_flags_file(path) == ["flags.f.percent: must be 0..100"]
    write(path, "flags: [")
    [problem] = check_flags_file(path)
    assert problem.startswith("<file>:") and "not valid YAML" in problem
    assert check_flags_file(tmp_path / "missing.yaml")[0].startswith("<file>: cannot read")


def test_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert FlagStore.from_env({}).flags == {}  # no default file: no flags
    with pytest.raises(ConfigError, match=r"PORTICO_FLAGS_FILE .*cannot read"):
        FlagStore.from_env({"PORTICO_FLAGS_FILE": str(tmp_path / "missing.yaml")})
    write(tmp_path / "bad.yaml", "flags: {f: {percent: 200}}")
    with pytest.raises(ConfigError, match=r"flags\.f\.percent: must be 0\.\.100"):
        FlagStore.from_env({"PORTICO_FLAGS_FILE": str(tmp_path / "bad.yaml")})
    with pytest.raises(ConfigError, match="PORTICO_FLAGS_RELOAD_INTERVAL"):
        FlagStore.from_env({"PORTICO_FLAGS_RELOAD_INTERVAL": "0"})
    write(tmp_path / "flags.yaml", "flags: {f: true}")
    assert FlagStore.from_env({}).is_enabled("f")  # the default file, when present
