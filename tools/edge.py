"""The nginx edge: render `nginx/portico.conf.j2` for a target, make a development CA and server
certificate, and start nginx plus a second gateway replica in front of a running stack.

Two targets share one template: `local` (processes on 127.0.0.1 ports, paths under var/edge/)
and `compose` (gateway replicas by compose service name, paths inside the nginx container).
The certificates are generated, never committed (var/ is git-ignored).

    python -m tools.edge certs                         # var/edge/certs/{ca,server}.{crt,key}
    python -m tools.edge render local --gateway-port 8080 --gateway-port 8090
    python -m tools.edge render compose -o var/edge/compose.conf
    python -m tools.edge check FILE                    # nginx -t on a rendered file
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from tools.stack import Process, Stack

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "nginx" / "portico.conf.j2"
EDGE_DIR = Path("var") / "edge"  # relative to the stack's work dir
HTTPS_PORT = 8443
HTTP_PORT = 8000
SECOND_GATEWAY_PORT = 8090
COMPOSE_GATEWAYS = ("gateway-1:8080", "gateway-2:8080")
COMPOSE_CERT_DIR = "/etc/nginx/certs"
COMPOSE_WORK_DIR = "/tmp/nginx"
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
READY_TIMEOUT = 15.0
# What the stack behind nginx needs (`make up EDGE=nginx`, the edge tests): the gateway believes
# nginx's X-Forwarded-For (for per-address limits), and identity counts both proxies that write
# it - nginx sets it to the client's address, the gateway appends nginx's - so its login
# throttle keys on the client, not on nginx (with 1 every login looked like 127.0.0.1).
STACK_ENV = {"GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32", "IDENTITY_PROXY_COUNT": "2"}
_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


class EdgeError(RuntimeError):
    """nginx is missing, its config is invalid, or it did not start; the message says which."""


@dataclass(frozen=True)
class Target:
    """Everything the template needs; `upstreams` are `host:port` of the gateway replicas."""

    name: str
    upstreams: tuple[str, ...]
    cert_dir: str
    work_dir: str
    https_port: int = HTTPS_PORT
    http_port: int = HTTP_PORT
    listen_host: str = "127.0.0.1"
    client_max_body_size: str = "1m"  # the gateway's server.max_body_bytes default
    worker_processes: str = "1"
    error_log_level: str = "warn"

    @property
    def log_dir(self) -> str:
        return f"{self.work_dir}/log"


def local_target(
    gateway_ports: Sequence[int],
    edge_dir: Path,
    *,
    https_port: int = HTTPS_PORT,
    http_port: int = HTTP_PORT,
) -> Target:
    """nginx on 127.0.0.1 in front of gateway processes on 127.0.0.1 ports."""
    edge_dir = edge_dir.resolve()
    return Target(
        name="local",
        upstreams=tuple(f"127.0.0.1:{p}" for p in gateway_ports),
        cert_dir=str(edge_dir / "certs"),
        work_dir=str(edge_dir / "run"),
        https_port=https_port,
        http_port=http_port,
    )


def compose_target(
    upstreams: Sequence[str] = COMPOSE_GATEWAYS,
    *,
    cert_dir: str = COMPOSE_CERT_DIR,
    work_dir: str = COMPOSE_WORK_DIR,
) -> Target:
    """nginx in its container, listening on every interface, gateways by service name."""
    return Target(
        name="compose",
        upstreams=tuple(upstreams),
        cert_dir=cert_dir,
        work_dir=work_dir,
        listen_host="",
        worker_processes="auto",
    )


def render(target: Target) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # nginx config, not HTML
    )
    listen_host = f"{target.listen_host}:" if target.listen_host else ""
    suffix = "" if target.https_port == 443 else f":{target.https_port}"
    return env.get_template(TEMPLATE.name).render(
        target=target.name,
        upstreams=target.upstreams,
        cert_dir=target.cert_dir,
        work_dir=target.work_dir,
        log_dir=target.log_dir,
        listen_host=listen_host,
        https_port=target.https_port,
        http_port=target.http_port,
        https_port_suffix=suffix,
        client_max_body_size=target.client_max_body_size,
        worker_processes=target.worker_processes,
        error_log_level=target.error_log_level,
    )


def write_config(target: Target, path: Path, *, make_dirs: bool | None = None) -> Path:
    """Render to `path`; for the local target (default) also create the dirs nginx writes to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(target))
    if make_dirs if make_dirs is not None else target.name == "local":
        Path(target.log_dir).mkdir(parents=True, exist_ok=True)
    return path


# --- certificates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CertPaths:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def cert_paths(cert_dir: Path) -> CertPaths:
    return CertPaths(
        cert_dir / "ca.crt", cert_dir / "ca.key", cert_dir / "server.crt", cert_dir / "server.key"
    )


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _still_valid(path: Path, margin: dt.timedelta = dt.timedelta(days=7)) -> bool:
    if not path.exists():
        return False
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.not_valid_after_utc - margin > dt.datetime.now(dt.UTC)


def ensure_certs(
    cert_dir: Path, names: Sequence[str] = SERVER_NAMES, *, days: int = 397
) -> CertPaths:
    """A development CA and a server certificate it signs, for `names` (DNS names or IPs).

    Kept while valid, so a browser or curl that trusts the CA once keeps trusting it. The CA
    is the `verify=` of clients; only the server files are given to nginx.
    """
    paths = cert_paths(cert_dir)
    cert_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    if _still_valid(paths.ca_cert) and paths.ca_key.exists():
        ca_cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        loaded = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        ca_key = loaded
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Portico development CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(ca_key, paths.ca_key)
        paths.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        paths.server_cert.unlink(missing_ok=True)  # signed by the old CA
    if _still_valid(paths.server_cert) and paths.server_key.exists():
        return paths
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))  # browsers reject longer than 398
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(key, paths.server_key)
    paths.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return paths


# --- running nginx ----------------------------------------------------------------------------


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None


def _nginx_argv(binary: str, conf: Path, work_dir: Path) -> list[str]:
    # -p and -e keep nginx away from /etc/nginx and /var/log/nginx even before it reads `conf`
    return [binary, "-p", str(work_dir), "-e", str(work_dir / "log" / "error.log"), "-c", str(conf)]


def check_config(conf: Path, work_dir: Path, binary: str | None = None) -> str:
    """`nginx -t` on `conf`; returns nginx's report, raises EdgeError when the test fails."""
    binary = binary or nginx_binary()
    if binary is None:
        raise EdgeError("nginx is not installed (Debian/Ubuntu: apt-get install nginx)")
    (work_dir / "log").mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [*_nginx_argv(binary, conf, work_dir), "-t", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    report = (done.stderr + done.stdout).strip()
    if done.returncode != 0:
        raise EdgeError(f"nginx -t {conf} failed:\n{report}")
    return report


def nginx_argv(conf: Path, work_dir: Path, binary: str | None = None) -> list[str]:
    """The foreground command (no daemon), stopped by SIGTERM/SIGQUIT to its PID."""
    binary = binary or nginx_binary()
    if binary is None:
        raise EdgeError("nginx is not installed (Debian/Ubuntu: apt-get install nginx)")
    return [*_nginx_argv(binary, conf, work_dir), "-g", "daemon off;"]


def tls_ready(port: int, ca_file: Path, host: str = "127.0.0.1") -> bool:
    """True once a TLS handshake trusting the dev CA succeeds on `port`."""
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with (
            socket.create_connection((host, port), timeout=1) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False


def wait_tls(
    port: int, ca_file: Path, popen: subprocess.Popen[bytes], log: Path | None = None
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise EdgeError(f"nginx exited with {popen.returncode}:\n{tail}")
        if tls_ready(port, ca_file):
            return
        time.sleep(0.05)  # polling a condition with a deadline
    raise EdgeError(f"nginx did not accept TLS on port {port} within {READY_TIMEOUT:.0f}s")


def start_edge(
    stack: Stack,
    *,
    second_gateway_port: int | None = None,
    https_port: int | None = None,
    http_port: int | None = None,
) -> list[Process]:
    """Start a second gateway and nginx in front of both, after `stack.start()`.

    The processes join `stack.processes`, so `stack.stop()` (and `make down` via the record)
    stops them; nginx stops first, being started last. Ports default to EDGE_GATEWAY2_PORT,
    EDGE_HTTPS_PORT and EDGE_HTTP_PORT, else 8090, 8443 and 8000. For the client IP to be
    believed, the stack must have been started with `STACK_ENV` in its environment.
    """
    from tools.stack import Process

    def port(given: int | None, var: str, default: int) -> int:
        return given if given is not None else int(os.environ.get(var, default))

    gw2 = port(second_gateway_port, "EDGE_GATEWAY2_PORT", SECOND_GATEWAY_PORT)
    https = port(https_port, "EDGE_HTTPS_PORT", HTTPS_PORT)
    http = port(http_port, "EDGE_HTTP_PORT", HTTP_PORT)
    edge_dir = stack.workdir / EDGE_DIR
    certs = ensure_certs(edge_dir / "certs")
    target = local_target([stack.ports["gateway"], gw2], edge_dir, https_port=https, http_port=http)
    conf = write_config(target, edge_dir / "nginx.conf")
    work_dir = Path(target.work_dir)
    check_config(conf, work_dir)

    second = stack.add_gateway(gw2)
    nginx = Process("nginx", nginx_argv(conf, work_dir), https, ready_path="")
    stack._spawn(nginx)
    assert nginx.popen is not None
    wait_tls(https, certs.ca_cert, nginx.popen, Path(target.log_dir) / "error.log")
    return [second, nginx]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.edge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    certs = sub.add_parser("certs", help="create the dev CA and server certificate")
    certs.add_argument("--dir", type=Path, default=EDGE_DIR / "certs")
    rend = sub.add_parser("render", help="render the nginx config for a target")
    rend.add_argument("target", choices=("local", "compose"))
    rend.add_argument("--gateway-port", type=int, action="append", dest="ports")
    rend.add_argument("--upstream", action="append", help="compose: host:port (repeatable)")
    rend.add_argument("--https-port", type=int, default=HTTPS_PORT)
    rend.add_argument("--http-port", type=int, default=HTTP_PORT)
    rend.add_argument("-o", "--output", type=Path)
    chk = sub.add_parser("check", help="nginx -t on a rendered config")
    chk.add_argument("conf", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "certs":
            paths = ensure_certs(args.dir)
            print(f"CA (trust this): {paths.ca_cert}\nserver: {paths.server_cert}")
        elif args.command == "render":
            if args.target == "local":
                target = local_target(
                    args.ports or [8080, SECOND_GATEWAY_PORT],
                    EDGE_DIR,
                    https_port=args.https_port,
                    http_port=args.http_port,
                )
            else:
                target = compose_target(args.upstream or COMPOSE_GATEWAYS)
            if args.output:
                write_config(target, args.output)
                print(args.output)
            else:
                sys.stdout.write(render(target))
        else:
            print(check_config(args.conf.resolve(), EDGE_DIR.resolve() / "run") or "ok")
    except EdgeError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
