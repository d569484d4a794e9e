"""Start everything on free loopback ports, run wrk in interleaved rounds, print one table.

Every row is measured in the same run against the same upstream. Each round runs every row
once (short wrk runs, in turn), so drift on a noisy machine hits all rows alike; the table
shows medians over rounds, and a row's ratio to nginx is the median of its per-round ratios.
CPU per request is the measured process tree's utime+stime delta (/proc/PID/stat) over the
requests wrk completed. Everything started is stopped by PID, on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
OUT = ROOT / "var" / "bench"

WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n{"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""

INSTALL_HINT = {
    "wrk": "apt-get install -y wrk   (Debian/Ubuntu; or build it from its source)",
    "nginx": "apt-get install -y nginx   (Debian/Ubuntu)",
}


# measured at one connection too: added latency, and the aggregate against its slowest part
ONE_CONN_ROWS = ("direct", "nginx", "gateway plain", "gateway aggregate", "direct slow part")
POLICIES_ROW = "gateway + 3 no-op policies"  # target: >= 0.9x "gateway plain" of the same run


class BenchError(Exception):
    pass


# --- processes ---------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 8) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Processes:
    """Everything started, stopped in reverse order by PID (TERM, then KILL)."""

    workdir: Path
    started: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us only; we stop them ourselves
            )
        proc = Proc(name, popen, log)
        self.started.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.popen.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.popen.wait(5)
        # children of a stopped parent (nginx workers, gunicorn workers) by their own PIDs
        for pid in _descendants_snapshot.pop(proc.pid, []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc in self.started:
            self.started.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.started)):
            self.stop(proc)


_descendants_snapshot: dict[int, list[int]] = {}


def descendants(pid: int) -> list[int]:
    """pid and its children, grandchildren... (from /proc/PID/task/*/children)."""
    found = [pid]
    i = 0
    while i < len(found):
        task_dir = Path(f"/proc/{found[i]}/task")
        with contextlib.suppress(OSError):
            for task in task_dir.iterdir():
                with contextlib.suppress(OSError):
                    found.extend(int(c) for c in (task / "children").read_text().split())
        i += 1
    _descendants_snapshot[pid] = found[1:]
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def wait_http(
    url: str, proc: Proc, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise BenchError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception as exc:
            last = str(exc)
        time.sleep(0.1)
    raise BenchError(f"{proc.name} not ready at {url} in {timeout}s ({last}):\n{proc.tail()}")


# --- wrk ---------------------------------------------------------------------------------


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None
    errors: int


def wrk(
    url: str,
    *,
    connections: int,
    duration: float,
    script: Path,
    headers: dict[str, str],
    cpu_pids: list[int],
) -> Run:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s"]
    argv += ["-s", str(script)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    before = cpu_seconds(cpu_pids)
    out = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=duration + 30, check=False
    )
    after = cpu_seconds(cpu_pids)
    line = next((ln for ln in reversed(out.stdout.splitlines()) if ln.startswith("{")), None)
    if out.returncode != 0 or line is None:
        raise BenchError(f"wrk failed on {url}: {out.stderr.strip() or out.stdout[-300:]}")
    doc = json.loads(line)
    requests = doc["requests"]
    if requests == 0:
        raise BenchError(f"no request completed on {url}")
    return Run(
        rps=requests / (doc["duration_us"] / 1e6),
        p50_ms=doc["p50_us"] / 1000,
        p99_ms=doc["p99_us"] / 1000,
        cpu_us=(after - before) / requests * 1e6 if cpu_pids else None,
        errors=doc["errors"] + doc["non2xx"],
    )


# --- the rows ----------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    proc: Proc | None = None
    status: str = "ok"  # else "pending: ...", "skipped: ...", "failed: ..."
    runs: list[Run] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    one_conn: list[Run] = field(default_factory=list)
    extra: bool = False  # an informative row beyond the issue's list
    ratio: bool = True  # False: a 20 ms endpoint's req/s says nothing next to nginx's

    def median(self, attr: str) -> float | None:
        values = [getattr(r, attr) for r in self.runs if getattr(r, attr) is not None]
        return statistics.median(values) if values else None


def nginx_conf(workdir: Path, port: int, upstream_port: int, *, forwarding: bool = True) -> Path:
    """The reference: one worker, a keep-alive pool, no access log; with `forwarding`, the same
    X-Forwarded-* and X-Request-ID fields the gateway sets (else nginx's bare defaults)."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    fields = (
        """
            # the forwarding fields the gateway sets: the upstream parses the same request
            # behind both (4 more fields cost the aiohttp upstream ~10% of its CPU here)
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Request-ID $request_id;"""
        if forwarding
        else ""
    )
    tmp = workdir / "nginx-tmp"
    tmp.mkdir(exist_ok=True)
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream bench {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";{fields}
        }}
    }}
}}
"""
    )
    return conf


def gateway_yaml(workdir: Path, upstream: str, issuer: Any, redis_url: str | None) -> Path:
    public = "    auth: {required: false}\n"
    jwt = "    auth: {required: true, scopes: [bench]}\n"
    routes = [
        ("plain", "/plain", "/bench", public, ""),
        ("jwt", "/jwt", "/bench", jwt, ""),
    ]
    limits = ""
    if redis_url:
        limits = (
            "rate_limits:\n"
            f"  redis_url: {redis_url}\n"
            "  redis_timeout: 0.1\n"
            "  on_redis_error: fail_closed\n"
            "  policies:\n"
            "    bench: {limit: 100000000, period: 1, burst: 100000000}\n"
        )
        routes.append(("limited", "/limited", "/bench", jwt, "    rate_limit: bench\n"))
    if _has("gateway.pipeline"):  # the pipeline's own cost: three policies that continue at once
        routes.append(
            ("policies", "/policies", "/bench", public, "    policies: [noop, noop, noop]\n")
        )
    if _has("gateway.pipeline.cache"):  # answered from the gateway's memory, no upstream
        routes.append(("cached", "/cached", "/bench", public, "    cache: {ttl: 3600}\n"))
    aggregates = ""
    if _has("gateway.pipeline.aggregate"):
        # three independent parts, each 20 ms on the upstream: the answer should take ~20 ms
        routes.append(("slow", "/slow/{part}", "/slow/{part}", public, ""))
        aggregates = (
            "aggregates:\n"
            "  - name: aggregate\n    path: /aggregate\n    mode: all_or_nothing\n"
            "    auth: {required: false}\n    parts:\n"
            + "".join(f"      - {{name: {p}, path: /slow/{p}}}\n" for p in ("a", "b", "c"))
        )
    text = (
        "server: {host: 127.0.0.1, port: 0}\n"
        f"auth: {{issuer: '{issuer.issuer}', audience: '{issuer.audience}', "
        f"jwks_url: '{upstream}/.well-known/jwks.json'}}\n"
        f"{limits}"
        "upstreams:\n"
        f"  bench: {{instances: ['{upstream}'], pool_size: 100, health: {{interval: 60}}}}\n"
        "routes:\n"
    )
    for name, path, rewrite, auth, extra in routes:
        text += (
            f"  - name: {name}\n    methods: [GET]\n    path: {path}\n"
            f"    rewrite: {rewrite}\n    upstream: bench\n{auth}{extra}"
        )
    path = workdir / "gateway.yaml"
    path.write_text(text + aggregates)
    return path


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def missing_tools() -> list[str]:
    missing = []
    if shutil.which("wrk") is None:
        missing.append("wrk")
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        missing.append("nginx")
    return missing


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# --- the run -----------------------------------------------------------------------------


@dataclass
class Bench:
    procs: Processes
    args: argparse.Namespace
    script: Path
    rows: list[Row] = field(default_factory=list)
    upstream: str = ""
    upstream_proc: Proc | None = None

    def wanted(self, name: str) -> bool:
        """Whether a row is selected by --rows (every row when it is empty)."""
        picks = [p.strip() for p in self.args.rows.split(",") if p.strip()]
        return not picks or name in ("direct", "nginx") or any(p in name for p in picks)

    def measure(self, row: Row, connections: int) -> Run:
        assert row.proc is not None
        return wrk(
            row.url,
            connections=connections,
            duration=self.args.duration,
            script=self.script,
            headers=row.headers,
            cpu_pids=descendants(row.proc.pid),
        )

    def add(self, row: Row, path: str, ready_path: str | None = None) -> None:
        assert row.proc is not None
        try:
            wait_http(row.url.rsplit("/", 1)[0] + (ready_path or path), row.proc, row.headers)
        except BenchError as exc:
            row.status = f"failed: {str(exc).splitlines()[0]}"
            print(f"  {row.name}: {exc}", file=sys.stderr)
        self.rows.append(row)

    def start(self, issuer: Any, token: str) -> None:
        workdir = self.procs.workdir
        jwks = workdir / "jwks.json"
        jwks.write_text(json.dumps(issuer.jwks()))
        port = free_port()
        self.upstream = f"http://127.0.0.1:{port}"
        up = self.procs.start(
            "upstream", [PY, "-m", "tests.bench.servers", "upstream", str(port), str(jwks)]
        )
        self.upstream_proc = up
        wait_http(self.upstream + "/bench", up)
        self.add(Row("direct", self.upstream + "/bench", proc=up), "/bench")

        port = free_port()
        conf = nginx_conf(workdir, port, int(self.upstream.rsplit(":", 1)[1]))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        proc = self.procs.start("nginx", [nginx, "-c", str(conf), "-p", str(workdir)])
        self.add(Row("nginx", f"http://127.0.0.1:{port}/bench", proc=proc), "/bench")
        if self.wanted("nginx, no forwarding fields"):
            port = free_port()
            bare = workdir / "nginx-bare"
            conf = nginx_conf(bare, port, int(self.upstream.rsplit(":", 1)[1]), forwarding=False)
            proc = self.procs.start("nginx-bare", [nginx, "-c", str(conf), "-p", str(bare)])
            row = Row("nginx, no forwarding fields", f"http://127.0.0.1:{port}/bench", proc=proc)
            row.extra = True
            self.add(row, "/bench")

        if self.wanted("naive"):
            port = free_port()
            proc = self.procs.start(
                "naive", [PY, "-m", "tests.bench.servers", "naive", str(port), self.upstream]
            )
            self.add(Row("naive", f"http://127.0.0.1:{port}/bench", proc=proc), "/bench")

        bench_env = {"BENCH_UPSTREAM": self.upstream}
        hint = "pip install -r requirements-bench.lock"
        if not self.wanted("fastapi-proxy-lib"):
            pass
        elif _has("fastapi_proxy_lib") and _has("uvicorn"):
            port = free_port()
            argv = [PY, "-m", "uvicorn", "--factory", "tests.bench.peers:fastapi_proxy_app"]
            argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
            argv += ["--no-access-log", "--loop", "uvloop", "--http", "httptools"]
            proc = self.procs.start("fastapi-proxy-lib", argv, bench_env)
            row = Row("fastapi-proxy-lib", f"http://127.0.0.1:{port}/bench", proc=proc)
            self.add(row, "/bench")
        else:
            self.rows.append(Row("fastapi-proxy-lib", status=f"skipped: {hint}"))
        if not self.wanted("proxy.py"):
            pass
        elif _has("proxy"):
            port = free_port()
            argv = [PY, "-m", "proxy", "--hostname", "127.0.0.1", "--port", str(port)]
            argv += ["--threaded", "--num-acceptors", "1", "--enable-reverse-proxy"]
            argv += ["--plugins", "tests.bench.peers.BenchReverseProxy", "--log-level", "WARNING"]
            proc = self.procs.start("proxy.py", argv, bench_env)
            self.add(Row("proxy.py", f"http://127.0.0.1:{port}/bench", proc=proc), "/bench")
        else:
            self.rows.append(Row("proxy.py", status=f"skipped: {hint}"))

        redis_url = self._redis() if self.wanted("gateway jwt+limit") else None
        config = gateway_yaml(workdir, self.upstream, issuer, redis_url)
        auth = {"Authorization": f"Bearer {token}"}
        gateway_rows = (
            "gateway plain",
            "gateway jwt",
            "gateway jwt+limit",
            "gateway aggregate",
            POLICIES_ROW,
            "gateway cache hit",
        )
        for name, module_args in (
            ("gateway", ["-m", "gateway"]),
            ("gateway-quiet", ["-m", "tests.bench.servers", "gateway-quiet"]),
        ):
            if name == "gateway" and not any(self.wanted(r) for r in gateway_rows):
                continue
            if name == "gateway-quiet" and not self.wanted("gateway plain, no access log"):
                continue
            port = free_port()
            env = {"GATEWAY_CONFIG": str(config), "GATEWAY_PORT": str(port)}
            env["GATEWAY_TRANSPORT"] = self.args.transport
            proc = self.procs.start(name, [PY, *module_args], env)
            base = f"http://127.0.0.1:{port}"
            if name == "gateway":
                if self.wanted("gateway plain"):
                    self.add(Row("gateway plain", base + "/plain", proc=proc), "/plain")
                if self.wanted("gateway jwt"):
                    self.add(Row("gateway jwt", base + "/jwt", auth, proc=proc), "/jwt")
                if self.wanted(POLICIES_ROW) and _has("gateway.pipeline"):
                    self.add(Row(POLICIES_ROW, base + "/policies", proc=proc), "/policies")
                if self.wanted("gateway cache hit") and _has("gateway.pipeline.cache"):
                    self.add(Row("gateway cache hit", base + "/cached", proc=proc), "/cached")
                if not self.wanted("gateway jwt+limit"):
                    pass
                elif redis_url:
                    row = Row("gateway jwt+limit", base + "/limited", auth, proc=proc)
                    self.add(row, "/limited")
                else:
                    self.rows.append(
                        Row("gateway jwt+limit", status="pending: rate limiting not built")
                    )
                if not self.wanted("gateway aggregate"):
                    pass
                elif _has("gateway.pipeline.aggregate"):
                    row = Row("gateway aggregate", base + "/aggregate", proc=proc, ratio=False)
                    self.add(row, "/aggregate")
                    url = self.upstream + "/slow/a"
                    part = Row("direct slow part", url, proc=self.upstream_proc, ratio=False)
                    part.extra = True
                    self.add(part, "/a")  # the ready check replaces the last segment
                else:
                    self.rows.append(
                        Row("gateway aggregate", status="pending: aggregation not built")
                    )
            else:
                row = Row("gateway plain, no access log", base + "/plain", proc=proc, extra=True)
                self.add(row, "/plain")

    def _redis(self) -> str | None:
        if not _has("gateway.ratelimit"):
            return None
        server = shutil.which("redis-server")
        if server is None:
            print("  redis-server not found: apt-get install -y redis-server", file=sys.stderr)
            return None
        port = free_port()
        argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no"]
        proc = self.procs.start("redis", argv)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return f"redis://127.0.0.1:{port}/0"
            if proc.popen.poll() is not None:
                break
            time.sleep(0.05)
        print(f"  redis did not start:\n{proc.tail()}", file=sys.stderr)
        return None

    def hold(self) -> None:
        """Print what runs where, then wait until interrupted (the caller stops it all)."""
        for row in self.rows:
            if row.status != "ok":
                print(f"{row.name}: {row.status}")
                continue
            pids = ",".join(str(p) for p in (row.proc.pid,) if row.proc is not None)
            head = " ".join(f"-H '{k}: {v}'" for k, v in row.headers.items())
            print(f"{row.name}\t{row.url}\tpid {pids}\t{head}", flush=True)
        print("holding: Ctrl-C (or SIGTERM) stops everything", flush=True)
        while True:
            time.sleep(3600)

    def rounds(self) -> None:
        live = [r for r in self.rows if r.status == "ok"]
        print(f"warming up {len(live)} targets ...", file=sys.stderr)
        for row in live:
            with contextlib.suppress(BenchError):
                wrk(
                    row.url,
                    connections=self.args.connections,
                    duration=1,
                    script=self.script,
                    headers=row.headers,
                    cpu_pids=[],
                )
        for n in range(self.args.rounds):
            print(f"round {n + 1}/{self.args.rounds} ...", file=sys.stderr)
            results: dict[str, Run] = {}
            for row in live:
                if row.status != "ok":
                    continue
                try:
                    results[row.name] = run = self.measure(row, self.args.connections)
                    row.runs.append(run)
                    if run.errors:
                        print(f"  {row.name}: {run.errors} errors/non-2xx", file=sys.stderr)
                except BenchError as exc:
                    row.status = f"failed: {exc}"
            nginx = results.get("nginx")
            for row in live:
                if nginx and row.name in results and row.ratio:
                    row.ratios.append(results[row.name].rps / nginx.rps)
            for row in live:  # one connection: the latency a proxy adds
                if row.name in ONE_CONN_ROWS and row.status == "ok":
                    with contextlib.suppress(BenchError):
                        row.one_conn.append(self.measure(row, 1))


def start_jwks(procs: Processes, issuer: Any) -> str:
    """The bench upstream alone, for its JWKS (the service rows without the gateway's)."""
    jwks = procs.workdir / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))
    port = free_port()
    argv = [PY, "-m", "tests.bench.servers", "upstream", str(port), str(jwks)]
    up = procs.start("upstream", argv)
    wait_http(f"http://127.0.0.1:{port}/bench", up)
    return f"http://127.0.0.1:{port}/.well-known/jwks.json"


# --- report ------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(
    bench: Bench, services: list[dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    rows_json = []
    lines = [
        f"{'row':<30} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11} {'x nginx':>8}",
        "-" * 79,
    ]
    for row in bench.rows:
        ratio = statistics.median(row.ratios) if row.ratios else None
        if row.status != "ok" and not row.runs:
            lines.append(f"{row.name:<30} {row.status}")
        else:
            lines.append(
                f"{row.name:<30} {_fmt(row.median('rps'), '9.0f')} "
                f"{_fmt(row.median('p50_ms'), '8.2f')} {_fmt(row.median('p99_ms'), '8.2f')} "
                f"{_fmt(row.median('cpu_us'), '11.0f')} {_fmt(ratio, '8.2f')}"
            )
        entry: dict[str, Any] = {
            "name": row.name,
            "rps": row.median("rps"),
            "p50_ms": row.median("p50_ms"),
            "p99_ms": row.median("p99_ms"),
            "cpu_us_per_req": row.median("cpu_us"),
            "ratio_to_nginx": ratio,
        }
        if row.status != "ok":
            entry["status"] = row.status
        if row.extra:
            entry["extra"] = True
        rows_json.append(entry)

    by_name = {r.name: r for r in bench.rows}
    added: float | None = None
    one = {}
    direct, gw = by_name.get("direct"), by_name.get("gateway plain")
    if direct and gw and direct.one_conn and gw.one_conn:
        pairs = zip(direct.one_conn, gw.one_conn, strict=False)
        added = statistics.median(g.p50_ms - d.p50_ms for d, g in pairs)
    for name in ("direct", "nginx", "gateway plain"):  # the aggregate has its own line
        row = by_name.get(name)
        if row and row.one_conn:
            one[name] = statistics.median(r.p50_ms for r in row.one_conn)
    policies_over: float | None = None
    noop = by_name.get(POLICIES_ROW)
    if gw and noop and gw.status == "ok" and noop.status == "ok":
        plain_rps, noop_rps = gw.median("rps"), noop.median("rps")
        if plain_rps and noop_rps:
            policies_over = noop_rps / plain_rps
            lines.append("")
            lines.append(
                f"{POLICIES_ROW}: {policies_over:.2f}x gateway plain's req/s (target >= 0.9)"
            )
    aggregate_over: float | None = None
    agg, part = by_name.get("gateway aggregate"), by_name.get("direct slow part")
    if agg and part and agg.one_conn and part.one_conn:
        pairs = zip(part.one_conn, agg.one_conn, strict=False)
        aggregate_over = statistics.median(a.p50_ms - p.p50_ms for p, a in pairs)
        agg_p50 = statistics.median(r.p50_ms for r in agg.one_conn)
        part_p50 = statistics.median(r.p50_ms for r in part.one_conn)
        lines.append("")
        lines.append(
            f"aggregate of 3 parts x 20 ms, 1 connection: p50 {agg_p50:.2f} ms, one part alone "
            f"{part_p50:.2f} ms: +{aggregate_over:.2f} ms (target <= 2 ms)"
        )
    lines.append("")
    lines.append(
        "1 connection p50: "
        + ", ".join(f"{k} {v:.3f} ms" for k, v in one.items())
        + f"; added by the gateway: {_fmt(added, '.3f')} ms"
    )
    if services:
        lines.append("")
        lines.append(
            f"{'service (direct, no gateway)':<80} {'req/s':>9} {'p99 ms':>8} {'CPU us/req':>11}"
        )
        for svc in services:
            if "status" in svc:
                lines.append(f"{svc['name']:<80} {svc['status']}")
            else:
                lines.append(
                    f"{svc['name']:<80} {svc['rps']:9.0f} {svc['p99_ms']:8.2f} "
                    f"{svc['cpu_us_per_req']:11.0f}"
                )
        from .reserve import ratio_lines

        lines.extend(ratio_lines(services))
    print("\n".join(lines))
    doc = {
        "machine": machine(),
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "connections": args.connections,
            "wrk_threads": 1,
            "gateway_transport": args.transport,
        },
        "rows": rows_json,
        "added_p50_ms_1conn": added,
        "aggregate_p50_over_slowest_part_ms": aggregate_over,
        "noop_policies_over_plain": policies_over,
        "p50_ms_1conn": one,
        "services": services,
    }
    return doc


def chart(doc: dict[str, Any], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no chart: pip install -r requirements-bench.lock (matplotlib)"
    rows = [r for r in doc["rows"] if r["ratio_to_nginx"] is not None]
    names = [r["name"] for r in rows]
    ratios = [r["ratio_to_nginx"] for r in rows]
    colors = ["#2b7bb9" if n.startswith("gateway") else "#999999" for n in names]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bars = ax.barh(names[::-1], ratios[::-1], color=colors[::-1])
    ax.bar_label(bars, labels=[f"{r:.2f}x" for r in ratios[::-1]], padding=3)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("req/s relative to nginx (median of per-round ratios)")
    ax.set_title(f"Portico gateway vs nginx - {doc['machine'].split(',')[0]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--transport", choices=("http1", "aiohttp"), default="http1")
    parser.add_argument("--no-services", action="store_true", help="skip the service rows")
    parser.add_argument(
        "--services-only",
        action="store_true",
        help="only the service rows (no gateway, nginx or peers; --rows filters them too)",
    )
    parser.add_argument(
        "--db",
        default="sqlite,postgresql",
        help="databases for the service rows: sqlite, postgresql (a throwaway database on "
        "BENCH_PG_URL, default postgresql://postgres@127.0.0.1:5432/postgres)",
    )
    parser.add_argument(
        "--rows",
        default="",
        help="comma-separated row names (substrings) to run; direct and nginx always run. "
        "For quick iterations, e.g. --rows 'gateway plain,jwt+limit' --no-services",
    )
    parser.add_argument(
        "--hold",
        action="store_true",
        help="start the rows' processes, print their URLs, PIDs and headers, and wait for "
        "Ctrl-C instead of measuring: to profile one by hand (perf, py-spy, wrk)",
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C: unwind, so the finally blocks stop every process."""

    def stop(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _needed(tool: str, args: argparse.Namespace) -> bool:
    """nginx serves the gateway rows only; wrk every row but the reserve pair (Python clients
    on both transports, tests.bench.reserve)."""
    if not args.services_only:
        return True
    if tool != "wrk":
        return False
    from .services import PLAN

    picks = [p.strip() for p in args.rows.split(",") if p.strip()]
    kinds = [k.strip() for k in args.db.split(",") if k.strip()]
    names = [f"{n} [{k}]" for _s, _a, _b, prefixes in PLAN for n in prefixes for k in kinds]
    return not picks or any(p in n for p in picks for n in names)


def picks_of(args: argparse.Namespace) -> list[str]:
    return [p.strip() for p in args.rows.split(",") if p.strip()]


def _picked(name: str, args: argparse.Namespace) -> bool:
    return any(p in name for p in picks_of(args))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [tool for tool in missing_tools() if _needed(tool, args)]
    if missing:
        print("make bench needs tools that are not installed:", file=sys.stderr)
        for tool in missing:
            print(f"  {tool}: {INSTALL_HINT[tool]}", file=sys.stderr)
        return 2
    from tests.support.tokens import TestIssuer

    issuer = TestIssuer(lifetime=3600)
    token = issuer.token(scopes=["bench"])
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="portico-bench-") as tmp, _interruptible():
        procs = Processes(Path(tmp))
        script = Path(tmp) / "report.lua"
        script.write_text(WRK_LUA)
        bench = Bench(procs, args, script)
        try:
            services: list[dict[str, Any]] = []
            if args.services_only:
                jwks_url = start_jwks(procs, issuer)
            else:
                print("starting upstream, nginx, peers and the gateway ...", file=sys.stderr)
                bench.start(issuer, token)
                if args.hold:
                    bench.hold()
                    return 0
                bench.rounds()
                jwks_url = bench.upstream + "/.well-known/jwks.json"
            if not args.no_services:
                from .services import service_rows

                print("service-side figures ...", file=sys.stderr)
                picks = picks_of(args)
                services = service_rows(
                    procs,
                    args,
                    issuer,
                    jwks_url,
                    script,
                    lambda name: not picks or any(p in name for p in picks),
                )
            doc = report(bench, services, args)
            dashboard = not picks_of(args) or _picked("dashboard vs read model", args)
            if not args.no_services and dashboard:
                from . import read_model

                print("dashboard vs read model (a stack of its own) ...", file=sys.stderr)
                found = read_model.measure()
                print("\n".join(read_model.lines(found)))
                doc["dashboard_vs_read_model"] = found
        except KeyboardInterrupt:
            print("\ninterrupted: stopping everything started", file=sys.stderr)
            return 130
        except BenchError as exc:
            print(f"bench failed: {exc}", file=sys.stderr)
            return 1
        finally:
            procs.stop_all()
    (OUT / "latest.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {OUT / 'latest.json'}; chart: {chart(doc, OUT / 'latest.png')}")
    return 0
