"""The reserve pair of `make bench` (tests/bench/reserve.py) keeps working: one real
inventory process on SQLite, both load generators for a fraction of a second each, both rows
and their ratio come out, and the stock check (every completed call reserved its unit)
passes. No figure is asserted."""

from __future__ import annotations

import argparse
from pathlib import Path

from tests.bench import reserve
from tests.bench.harness import Processes, start_jwks
from tests.bench.services import _init
from tests.support.tokens import TestIssuer


def test_the_reserve_pair_measures_both_transports_on_one_process(tmp_path: Path) -> None:
    procs = Processes(tmp_path)
    issuer = TestIssuer(lifetime=600)
    args = argparse.Namespace(rounds=2, duration=0.3, connections=2)
    try:
        tokens = {
            "PORTICO_ISSUER": issuer.issuer,
            "PORTICO_AUDIENCE": issuer.audience,
            "PORTICO_JWKS_URL": start_jwks(procs, issuer),
        }
        env = reserve.inventory_env(f"sqlite+aiosqlite:///{tmp_path / 'inv.db'}", tokens)
        assert _init("inventory", env) is None
        grpc_row, rest_row = reserve.measure_reserve(procs, args, issuer, env, "sqlite")
    finally:
        procs.stop_all()
    assert "status" not in grpc_row, grpc_row
    assert grpc_row["name"] == f"{reserve.GRPC_ROW} [sqlite]"
    assert rest_row["name"] == f"{reserve.REST_ROW} [sqlite]"
    for row in (grpc_row, rest_row):
        assert row["errors"] == 0 and row["rps"] > 0 and row["cpu_us_per_req"] > 0
    assert set(grpc_row["vs_rest"]) == {"rps", "cpu_per_call"}
    [line] = reserve.ratio_lines([grpc_row, rest_row])
    assert line.startswith("reserve, gRPC / REST [sqlite]: req/s ")


def test_only_the_reserve_pair_needs_no_wrk() -> None:
    from tests.bench.harness import _needed, parse_args

    def needs(*argv: str) -> dict[str, bool]:
        args = parse_args(list(argv))
        return {tool: _needed(tool, args) for tool in ("wrk", "nginx")}

    assert needs("--services-only", "--rows", "reserve") == {"wrk": False, "nginx": False}
    assert needs("--services-only", "--rows", "inventory") == {"wrk": True, "nginx": False}
    assert needs("--services-only") == {"wrk": True, "nginx": False}
    assert needs("--rows", "reserve") == {"wrk": True, "nginx": True}
    assert reserve.wanted_kinds(["sqlite", "postgresql"], lambda n: "REST" in n) == [
        "sqlite",
        "postgresql",
    ]
    assert reserve.wanted_kinds(["sqlite"], lambda n: "catalog" in n) == []
