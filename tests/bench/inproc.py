"""The gateway's own CPU per proxied request, without sockets: `python -m tests.bench.inproc`.

Why: on a 2-vCPU VM a wrk round's req/s moves by 15% from one round to the next with the same
code (where the scheduler puts wrk, the upstream and the proxy), so a change worth 2-5% of the
gateway's CPU cannot be seen there. Here the front server and the pooled upstream client get
fake transports: each request's bytes are fed straight into the front server's protocol, the
upstream's answer straight into the pooled connection's, and the answer is taken from the fake
client transport. What is timed is the Python path of one plain proxied request (parsing both
ways, routing, headers, the access line and metrics) - no kernel, no event loop wake-ups.
Medians of several runs repeat to about 1-2%.

The route is the bench's `plain` one (public, one upstream instance), so requests take the
callback path (`Http1Transport.start`); `--task` forces the task path for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvloop

__all__ = ["main"]

_ROOT = str(Path(__file__).resolve().parents[2]) + os.sep  # the checkout, cut from file names

REQUEST = b"GET /plain HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
    b"Content-Length: 103\r\nDate: Thu, 26 Nov 2026 01:30:00 GMT\r\n"
    b"Server: Python/3.11 aiohttp/3.13\r\n\r\n" + b"x" * 103
)
ORIGIN = "http://127.0.0.1:9"  # never dialled: the connection below is a fake one


class FakeTransport:
    """What the protocols write, kept for the caller."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def writelines(self, parts: list[bytes]) -> None:
        self.out.extend(parts)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        info = {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}
        return info.get(name, default)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class DirectWrites:
    """Writes sent at once: in place of the loop turn's `WriteBatch`, whose flush at the end of
    a turn this loop (no turns between requests) would never reach."""

    def write(self, transport: Any, data: bytes) -> None:
        transport.write(data)

    def flush(self) -> None:
        pass


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.inproc", description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="per run")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-access-log", action="store_true", help="the access line off")
    parser.add_argument("--task", action="store_true", help="force the task path")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="time by the thread's CPU time, not the wall clock: steadier on a busy machine",
    )
    parser.add_argument(
        "--jwt",
        action="store_true",
        help="the `jwt` route with a bearer token (verified once, then the verifier's cache)",
    )
    parser.add_argument(
        "--api-keys",
        action="store_true",
        help="with API keys on (GATEWAY_API_KEYS_URL set; its feed never answers): what a "
        "request without X-API-Key pays for them (ADR 0036)",
    )
    parser.add_argument(
        "--opcodes",
        type=int,
        metavar="N",
        default=0,
        help="instead of timing, count the bytecodes N requests execute, per function: exact "
        "and repeatable whatever else the machine does (slow: a trace hook per bytecode)",
    )
    return parser.parse_args(argv)


async def measure(args: argparse.Namespace, workdir: Path) -> list[float]:
    from gateway import front as front_module
    from gateway import http1
    from gateway.app import STATE, TRANSPORT, create_app
    from gateway.config import load_config
    from gateway.transport import OutboundRequest
    from tests.bench.harness import gateway_yaml
    from tests.support.tokens import TestIssuer

    issuer = TestIssuer(lifetime=3600)
    verifier = issuer.async_verifier()
    request = REQUEST
    if args.jwt:
        token = issuer.token(["bench"])
        await verifier.verify(token)  # in the verifier's cache: requests take the inline path
        bearer = b"Authorization: Bearer " + token.encode()
        request = b"GET /jwt HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n" + bearer + b"\r\n\r\n"
    if args.api_keys:
        os.environ["GATEWAY_API_KEYS_URL"] = ORIGIN + "/internal/v1/api-keys"
        os.environ["GATEWAY_API_KEYS_SECRET"] = "b" * 40
        os.environ["GATEWAY_API_KEYS_TIMEOUT"] = "0.2"
    config = load_config(gateway_yaml(workdir, ORIGIN, issuer, None))
    app = create_app(config, verifier=verifier)
    server = front_module.FrontServer(app, app[STATE])
    await server.start("127.0.0.1", 0)
    start_now = http1.Http1Transport.start
    try:
        transport = app[TRANSPORT]
        assert isinstance(transport, http1.Http1Transport)
        pool = transport._pool(OutboundRequest("bench", ORIGIN, "GET", "/", {}, None, 5.0))
        pool.writes = DirectWrites()  # type: ignore[assignment]
        server.writes = DirectWrites()  # type: ignore[assignment]
        upstream = http1._Connection(pool)
        upstream.connection_made(FakeTransport())  # type: ignore[arg-type]
        pool.count += 1
        pool.connections.add(upstream)
        pool.release(upstream)  # one idle kept-alive connection
        client = front_module._Connection(server)
        client_transport = FakeTransport()
        client.connection_made(client_transport)  # type: ignore[arg-type]
        if args.task:  # no idle connection to write on at once: the forward step's task
            http1.Http1Transport.start = lambda *_: None  # type: ignore[method-assign,assignment]

        async def one() -> None:
            client.data_received(request)
            if args.task:
                await asyncio.sleep(0)  # the task writes the upstream request
            upstream.data_received(ANSWER)
            for _ in range(3):  # the task path answers a loop turn or two later
                if not client.busy:
                    return
                await asyncio.sleep(0)
            raise SystemExit("the request was not answered")

        for _ in range(2000):
            await one()
        last = client_transport.out[-1]
        if not last.startswith(b"HTTP/1.1 200 "):
            raise SystemExit(f"unexpected answer: {last[:120]!r}")
        gc.collect()
        gc.freeze()
        if args.opcodes:
            return await count_opcodes(one, args.opcodes)
        clock = time.thread_time if args.cpu else time.perf_counter
        runs = []
        for _ in range(args.runs):
            client_transport.out.clear()
            began = clock()
            for _ in range(args.requests):
                await one()
            runs.append((clock() - began) / args.requests * 1e6)
            await asyncio.sleep(0.06)  # the log writer's batch is written between runs
        client.connection_lost(None)  # the fake connection ends: close() need not wait for it
        return runs
    finally:
        http1.Http1Transport.start = start_now  # type: ignore[method-assign]
        await server.close()


async def count_opcodes(one: Any, n: int) -> list[float]:
    """Bytecodes executed per request, by function (printed), for `n` requests.

    Why: the wall clock of a 2-vCPU VM cannot see a 5% change, and callgrind's totals move
    with the random RSA key the issuer makes; the number of bytecodes the interpreter runs
    repeats to ~0.1% (only the access line's once-per-millisecond timestamp follows the
    clock). It found what the pipeline added: 2654 bytecodes per request before it
    (f5677fe), 3002 with it, 2838 after the fixes of 2026-12-06."""
    counts: Counter[str] = Counter()
    root = _ROOT

    def local(frame: Any, event: str, _arg: Any) -> Any:
        if event == "opcode":
            code = frame.f_code
            counts[f"{code.co_filename.removeprefix(root)}:{code.co_name}"] += 1
        return local

    def trace(frame: Any, _event: str, _arg: Any) -> Any:
        frame.f_trace_opcodes = True
        return local

    sys.settrace(trace)
    try:
        for _ in range(n):
            await one()
    finally:
        sys.settrace(None)
    own = {k: v for k, v in counts.items() if not k.startswith("tests/bench/")}
    print(f"bytecodes per request: {sum(own.values()) / n:.1f} (the bench's own excluded)")
    for name, count in sorted(own.items(), key=lambda kv: -kv[1])[:40]:
        print(f"{count / n:8.1f}  {name}")
    return []


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from chassis.logging import configure_logging

    with tempfile.TemporaryDirectory(prefix="portico-inproc-") as tmp:
        # The access lines go to a file, as in `make bench`, and through file descriptor 2, as
        # the gateway's do (the chassis writes the process' own stderr by descriptor); what
        # this prints goes to the saved descriptor.
        saved = os.dup(2)
        with (Path(tmp) / "gateway.log").open("w") as log_file:
            os.dup2(log_file.fileno(), 2)
            try:
                configure_logging("gateway")
                if args.no_access_log:
                    logging.getLogger("portico.http").setLevel(logging.WARNING)
                runs = uvloop.run(measure(args, Path(tmp)))
                if args.opcodes:
                    return 0
                logging.getLogger().handlers[0].flush()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                logging.getLogger("portico.http").setLevel(logging.NOTSET)
    path = "task" if args.task else "callback"
    clock = ", thread CPU time" if args.cpu else ""
    log = "no access log" if args.no_access_log else "access log on"
    print(
        f"gateway {'jwt' if args.jwt else 'plain'}{' (API keys on)' if args.api_keys else ''}, "
        f"{path} path, {log}{clock}: {statistics.median(runs):.2f} us per request "
        f"(median of {len(runs)} runs x {args.requests}; {min(runs):.2f}-{max(runs):.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
