"""The Kubernetes manifests in deploy/k8s, checked without a cluster.

Each overlay is rendered by a small kustomize subset below (resources, namespace, images,
replicas, config map and secret generators - all the manifests use; anything else fails
loudly), with the committed `*.example` files standing in for the never-committed secrets.
When a `kustomize` or `kubectl` binary is on PATH the real renderer must agree with it. Every
object is validated against the Kubernetes 1.30 JSON schemas of `kubernetes-validate` (strict:
unknown fields fail), then the rules a schema cannot express: probes, resources, non-root,
selectors, references, and a NetworkPolicy graph equal to the architecture's calls.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
K8S_VERSION = "1.30"
PART_OF = {"app.kubernetes.io/part-of": "portico"}

SERVICES = {
    "identity": 8101,
    "catalog": 8102,
    "inventory": 8103,
    "orders": 8104,
    "payments": 8105,
    "notifications": 8106,
    "views": 8107,
}
GUNICORN = {"identity", "catalog", "payments"}
AUTOSCALED = {"gateway", "orders", "catalog"}
STORES = {"postgres": 5432, "rabbitmq": 5672, "redis": 6379}
PORTS = {**SERVICES, "gateway": 8080, **STORES}
# inventory's gRPC port (ADR 0025), called by orders only (ADR 0027), behind a headless
# Service of its own so orders' channel balances over the pods
GRPC_PORTS = {"inventory": 50061}
GRPC_CALLS = {("orders", "inventory")}
HEADLESS = {"inventory-grpc": "inventory"}
INGRESS_CONTROLLER = "ingress-controller"
SERVICE_HEALTH = ("/health/live", "/health/ready")

# The calls the architecture has (ARCHITECTURE.md s.1): (caller, callee). Nothing else may pass.
ALLOWED_CALLS = {
    (INGRESS_CONTROLLER, "gateway"),
    *(("gateway", s) for s in SERVICES),
    ("gateway", "redis"),
    ("catalog", "redis"),  # the product read cache (ADR 0021)
    *(("orders", s) for s in ("catalog", "inventory", "payments")),
    ("views", "orders"),  # orders' history feed (ADR 0030)
    *((s, "identity") for s in SERVICES if s != "identity"),  # JWKS; orders also gets tokens
    *((s, "postgres") for s in SERVICES),
    *(
        (s, "rabbitmq")
        for s in ("catalog", "inventory", "orders", "payments", "notifications", "views")
    ),
    ("gateway", "rabbitmq"),  # catalog's product events purge the response cache
}

Doc = dict[str, Any]


def _kubernetes_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("kubernetes-validate is not installed (required with CI=true)")
        pytest.skip("kubernetes-validate is not installed")
    return kubernetes_validate


# --- a kustomize subset ----------------------------------------------------------------------

KNOWN_KEYS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "images",
    "replicas",
    "configMapGenerator",
    "secretGenerator",
}
CLUSTER_SCOPED = {"Namespace"}


def _read_file(path: Path) -> bytes:
    """A file, or its committed `.example` when the real (secret) one is absent."""
    if not path.exists():
        path = path.with_name(path.name + ".example")
    return path.read_bytes()


def _env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in _read_file(path).decode().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


def _generated(spec: Doc, kind: str, here: Path) -> Doc:
    data: dict[str, str] = {}
    for env in spec.get("envs", []):
        data.update(_env_file(here / env))
    for item in spec.get("files", []):
        key, _, rel = item.rpartition("=") if "=" in item else ("", "", item)
        data[key or Path(rel).name] = _read_file(here / rel).decode()
    for literal in spec.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    unknown = set(spec) - {"name", "envs", "files", "literals", "behavior", "type"}
    assert not unknown, f"{here}: generator keys the test renderer lacks: {unknown}"
    doc: Doc = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}}
    if kind == "Secret":
        doc["type"] = spec.get("type", "Opaque")
        doc["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        doc["data"] = data
    doc["_generated"] = True
    return doc


def _build(here: Path) -> list[Doc]:
    kustomization = yaml.safe_load((here / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN_KEYS
    assert not unknown, f"{here}: kustomization keys the test renderer lacks: {unknown}"
    docs: list[Doc] = []
    for entry in kustomization.get("resources", []):
        path = here / entry
        if path.is_dir():
            docs.extend(_build(path))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for key, kind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
        for spec in kustomization.get(key, []):
            new = _generated(spec, kind, here)
            same = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == spec["name"]]
            behavior = spec.get("behavior", "create")
            if behavior == "create":
                assert not same, f"{here}: {kind} {spec['name']} generated twice"
                docs.append(new)
            else:
                assert same, f"{here}: {behavior} of a missing {kind} {spec['name']}"
                field = "data"
                if behavior == "merge":
                    same[0][field] = {**same[0].get(field, {}), **new[field]}
                else:
                    same[0][field] = new[field]
    for image in kustomization.get("images", []):
        for doc in docs:
            for container in _containers(doc):
                name, _, _tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    for replica in kustomization.get("replicas", []):
        targets = [
            d
            for d in docs
            if d["kind"] == "Deployment" and d["metadata"]["name"] == replica["name"]
        ]
        assert targets, f"{here}: replicas for a missing Deployment {replica['name']}"
        targets[0]["spec"]["replicas"] = replica["count"]
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] == "Namespace":
                doc["metadata"]["name"] = kustomization["namespace"]
            else:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs


def _hash_suffixes(docs: list[Doc]) -> list[Doc]:
    """Name generated objects `<name>-<hash>` and rewrite every reference, as kustomize does."""
    renamed: dict[tuple[str, str], str] = {}
    for doc in docs:
        if doc.pop("_generated", False):
            digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:10]
            old = doc["metadata"]["name"]
            doc["metadata"]["name"] = f"{old}-{digest}"
            renamed[(doc["kind"], old)] = doc["metadata"]["name"]
    for doc in docs:
        pod = _pod_spec(doc)
        if pod is None:
            continue
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                ref = volume["configMap"]
                ref["name"] = renamed.get(("ConfigMap", ref["name"]), ref["name"])
            if "secret" in volume:
                ref = volume["secret"]
                ref["secretName"] = renamed.get(("Secret", ref["secretName"]), ref["secretName"])
        for container in _containers(doc):
            for source in container.get("envFrom", []):
                for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if key in source:
                        name = source[key]["name"]
                        source[key]["name"] = renamed.get((kind, name), name)
    for doc in docs:
        if doc["kind"] == "Ingress":
            for tls in doc["spec"].get("tls", []):
                tls["secretName"] = renamed.get(("Secret", tls["secretName"]), tls["secretName"])
    return docs


def render(overlay: str) -> list[Doc]:
    return _hash_suffixes(_build(ROOT / "overlays" / overlay))


# --- helpers ---------------------------------------------------------------------------------


def _pod_spec(doc: Doc) -> Doc | None:
    if doc["kind"] == "Deployment":
        return doc["spec"]["template"]["spec"]
    return None


def _containers(doc: Doc, *, init: bool = True) -> Iterator[Doc]:
    pod = _pod_spec(doc)
    if pod is not None:
        yield from pod["containers"]
        if init:
            yield from pod.get("initContainers", [])


def _by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _unhashed(name: str) -> str:
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def container_environment(
    rendered: list[Doc], deployment: str, root: Path, *, init: bool = False
) -> tuple[Doc, dict[str, str]]:
    """A Deployment's main (or init) container and the environment it runs with, its mounted
    ConfigMaps and Secrets written under `root` as the kubelet would (each key a file), and
    every mount path - in the environment and in the mounted config files - moved under
    `root`. For running a process as the pod would, outside a cluster."""
    pod = _pod_spec(_by_kind(rendered, "Deployment")[deployment])
    assert pod is not None
    if init:
        (container,) = [c for c in pod["initContainers"] if c["name"] == "init"]
    else:
        (container,) = pod["containers"]
    objects = {("ConfigMap", n): d for n, d in _by_kind(rendered, "ConfigMap").items()}
    objects |= {("Secret", n): d for n, d in _by_kind(rendered, "Secret").items()}
    volumes = {}
    for volume in pod["volumes"]:
        if "configMap" in volume:
            volumes[volume["name"]] = objects[("ConfigMap", volume["configMap"]["name"])]
        elif "secret" in volume:
            volumes[volume["name"]] = objects[("Secret", volume["secret"]["secretName"])]
    mounts = [m for m in container.get("volumeMounts", []) if m["name"] in volumes]

    def moved(text: str) -> str:
        for mount in mounts:
            text = text.replace(mount["mountPath"], str(root) + mount["mountPath"])
        return text

    for mount in mounts:
        source = volumes[mount["name"]]
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        for key, value in source["data"].items():
            if source["kind"] == "Secret":
                (target / key).write_bytes(base64.b64decode(value))
            else:
                (target / key).write_text(moved(value))
    environ: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source["secretRef"]
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        data = objects[(kind, ref["name"])]["data"]
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        environ.update(data)
    environ.update({e["name"]: moved(e["value"]) for e in container.get("env", []) if "value" in e})
    return container, environ


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[Doc]:
    return render(request.param)


# --- tests -----------------------------------------------------------------------------------


def test_every_object_matches_the_kubernetes_schema(rendered: list[Doc]) -> None:
    validator = _kubernetes_validate()
    for doc in rendered:
        try:
            validator.validate(doc, K8S_VERSION, strict=True)
        except validator.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")


def test_one_deployment_and_service_per_process(rendered: list[Doc]) -> None:
    deployments = _by_kind(rendered, "Deployment")
    assert set(deployments) == {*SERVICES, "gateway"}
    assert set(_by_kind(rendered, "Service")) == {*SERVICES, "gateway", *HEADLESS}
    assert set(_by_kind(rendered, "PodDisruptionBudget")) == {*SERVICES, "gateway"}
    for name, doc in deployments.items():
        (main,) = _containers(doc, init=False)
        assert main["image"].startswith("ghcr.io/portico/portico:"), name
        command = main["command"]
        if name == "gateway":
            assert command == ["python", "-m", "gateway"]
        elif name in GUNICORN:
            assert command[:2] == ["gunicorn", f"services.{name}.app:create_app()"], name
            assert f"0.0.0.0:{PORTS[name]}" in command, name
        else:
            assert command == ["python", "-m", f"services.{name}", "serve"], name
        ports = [{"name": "http", "containerPort": PORTS[name], "protocol": "TCP"}]
        if name in GRPC_PORTS:
            ports.append({"name": "grpc", "containerPort": GRPC_PORTS[name], "protocol": "TCP"})
        assert main["ports"] == ports, name


def test_every_deployment_has_probes_resources_and_runs_as_non_root(rendered: list[Doc]) -> None:
    for name, doc in _by_kind(rendered, "Deployment").items():
        pod = _pod_spec(doc)
        assert pod is not None
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["automountServiceAccountToken"] is False, name
        live, ready = ("/healthz", "/readyz") if name == "gateway" else SERVICE_HEALTH
        for container in _containers(doc):
            where = f"{name}/{container['name']}"
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, where
        (main,) = _containers(doc, init=False)
        if name != "gateway":  # migrate, then init, before the server starts (ADR 0019)
            migrate, init = pod["initContainers"]
            assert migrate["command"] == ["python", "-m", f"services.{name}", "migrate"], name
            assert f"python -m services.{name} init" in " ".join(init["command"]), name
        assert main["livenessProbe"]["httpGet"] == {"path": live, "port": "http"}, name
        assert main["readinessProbe"]["httpGet"] == {"path": ready, "port": "http"}, name


def test_selectors_services_autoscalers_and_budgets_target_deployments(
    rendered: list[Doc],
) -> None:
    deployments = _by_kind(rendered, "Deployment")
    for name, doc in deployments.items():
        selector = doc["spec"]["selector"]["matchLabels"]
        assert _matches(selector, doc["spec"]["template"]["metadata"]["labels"]), name
    for name, service in _by_kind(rendered, "Service").items():
        targets = [
            d
            for d in deployments.values()
            if _matches(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        owner = HEADLESS.get(name, name)
        assert [t["metadata"]["name"] for t in targets] == [owner], name
        port_names = {p["name"] for p in next(_containers(targets[0]))["ports"]}
        for port in service["spec"]["ports"]:
            expected = GRPC_PORTS[owner] if name in HEADLESS else PORTS[name]
            assert port["targetPort"] in port_names and port["port"] == expected, name
        if name in HEADLESS:
            assert service["spec"]["clusterIP"] == "None", name
    for name, pdb in _by_kind(rendered, "PodDisruptionBudget").items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        hits = [
            d
            for d in deployments.values()
            if _matches(selector, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(hits) == 1, name
    autoscalers = _by_kind(rendered, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in autoscalers.values()} == AUTOSCALED
    for hpa in autoscalers.values():
        target = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
        assert "replicas" not in target["spec"], "the autoscaler owns the replica count"
        assert hpa["spec"]["minReplicas"] >= 2


def test_references_resolve_and_ingress_serves_the_gateway_over_tls(rendered: list[Doc]) -> None:
    config_maps, secrets = _by_kind(rendered, "ConfigMap"), _by_kind(rendered, "Secret")
    for name, doc in _by_kind(rendered, "Deployment").items():
        pod = _pod_spec(doc)
        assert pod is not None
        for volume in pod["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, name
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, name
        for container in _containers(doc):
            for source in container["envFrom"]:
                ref = source.get("configMapRef") or source["secretRef"]
                assert ref["name"] in (config_maps if "configMapRef" in source else secrets)
    (ingress,) = _by_kind(rendered, "Ingress").values()
    (tls,) = ingress["spec"]["tls"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] in tls["hosts"]
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {"name": "gateway", "port": {"name": "http"}}
    if "cert-manager.io/cluster-issuer" not in ingress["metadata"].get("annotations", {}):
        assert secrets[tls["secretName"]]["type"] == "kubernetes.io/tls"


def _peer(peer: Doc) -> str:
    if "namespaceSelector" in peer:
        labels = peer["namespaceSelector"]["matchLabels"]
        return {"ingress-nginx": INGRESS_CONTROLLER, "kube-system": "dns"}[
            labels["kubernetes.io/metadata.name"]
        ]
    labels = peer["podSelector"]["matchLabels"]
    assert _matches(PART_OF, labels), peer
    return labels["app.kubernetes.io/name"]


def test_network_policies_allow_exactly_the_architecture_calls(rendered: list[Doc]) -> None:
    policies = _by_kind(rendered, "NetworkPolicy").values()
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]]
    assert any(set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} for p in deny)
    ingress: set[tuple[str, str]] = set()
    egress: set[tuple[str, str]] = set()
    for policy in policies:
        spec = policy["spec"]
        if spec["podSelector"] == {}:
            for rule in spec.get("egress", []):  # only DNS may be open to every pod
                assert {_peer(p) for p in rule["to"]} == {"dns"}
                assert {p["port"] for p in rule["ports"]} == {53}
            assert "ingress" not in spec
            continue
        owner = spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for rule in spec.get("ingress", []):
            ports = [p["port"] for p in rule["ports"]]
            callers = {_peer(p) for p in rule["from"]}
            if owner in GRPC_PORTS and ports == [GRPC_PORTS[owner]]:  # gRPC: its callers only
                assert {(c, owner) for c in callers} <= GRPC_CALLS, policy["metadata"]
            else:
                assert ports == [PORTS[owner]], policy["metadata"]
            ingress.update((c, owner) for c in callers)
        for rule in spec.get("egress", []):
            for peer in rule["to"]:
                callee = _peer(peer)
                ports = [p["port"] for p in rule["ports"]]
                if (owner, callee) in GRPC_CALLS and ports == [GRPC_PORTS[callee]]:
                    continue  # the gRPC twin of an allowed call, checked above
                assert ports == [PORTS[callee]], policy["metadata"]
                egress.add((owner, callee))
    grpc_ingress = {
        (_peer(p), policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
        for policy in policies
        if policy["spec"]["podSelector"]
        for rule in policy["spec"].get("ingress", [])
        if [q["port"] for q in rule["ports"]] == [50061]
        for p in rule["from"]
    }
    assert grpc_ingress == GRPC_CALLS
    assert ingress == ALLOWED_CALLS
    assert egress == {(a, b) for a, b in ALLOWED_CALLS if a != INGRESS_CONTROLLER}


def test_gateway_config_map_is_a_valid_gateway_config(rendered: list[Doc], tmp_path: Path) -> None:
    from gateway.config import check_config

    config_maps = {_unhashed(n): d for n, d in _by_kind(rendered, "ConfigMap").items()}
    _main, environ = container_environment(rendered, "gateway", tmp_path / "pod")
    assert environ["GATEWAY_REDIS_URL_FILE"].endswith("/redis-url")  # a mounted Secret
    path = tmp_path / "gateway.yaml"
    path.write_text(config_maps["gateway-config"]["data"]["gateway.yaml"])
    assert environ["GATEWAY_CONFIG"].endswith("/gateway.yaml")
    assert check_config(path, environ=environ) == []


def test_identity_counts_the_ingress_and_the_gateway(rendered: list[Doc]) -> None:
    """ingress-nginx sets X-Forwarded-For to its peer (compute-full-forwarded-for is off by
    default) and the gateway appends the controller's address: identity's login throttle must
    skip exactly those two entries to key on the client."""
    config_maps = {_unhashed(n): d for n, d in _by_kind(rendered, "ConfigMap").items()}
    assert config_maps["portico-env"]["data"]["IDENTITY_PROXY_COUNT"] == "2"
    (ingress,) = _by_kind(rendered, "Ingress").values()
    annotations = ingress["metadata"].get("annotations", {})
    assert "nginx.ingress.kubernetes.io/compute-full-forwarded-for" not in annotations


def test_secrets_are_mounted_files_read_through_file_variables(
    rendered: list[Doc], tmp_path: Path
) -> None:
    """No Secret reaches a pod's environment: each is a volume, and every secret setting the
    process has is given as `<NAME>_FILE` naming one of its files (chassis.settings)."""
    import dataclasses
    import importlib

    from chassis.messaging.events import BrokerSettings
    from chassis.settings import env_name, is_secret

    def secret_names(cls: type, prefix: str) -> set[str]:
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        return {env_name(f, prefix) for f in fields if is_secret(f)}

    for name in (*SERVICES, "gateway"):
        for init in (False, True) if name != "gateway" else (False,):
            root = tmp_path / name / str(init)
            container, environ = container_environment(rendered, name, root, init=init)
            where = f"{name}/{container['name']}"
            assert all("secretRef" not in s for s in container["envFrom"]), where
            if name == "gateway":
                wanted = {"GATEWAY_REDIS_URL", *secret_names(BrokerSettings, "PORTICO_")}
            else:
                module = importlib.import_module(f"services.{name}.settings")
                cls = next(getattr(module, n) for n in module.__all__ if n.endswith("Settings"))
                wanted = secret_names(cls, f"{name.upper()}_")
                if name in {"catalog", "inventory", "orders", "payments", "notifications", "views"}:
                    wanted |= secret_names(BrokerSettings, "PORTICO_")
            for var in wanted:
                assert var not in environ, f"{where}: {var} in the environment"
                assert f"{var}_FILE" in environ, f"{where}: {var}_FILE is not set"
                path = Path(environ[f"{var}_FILE"])
                assert path.is_file() and str(path).startswith(str(root)), f"{where}: {var}"
                assert path.read_text().strip(), f"{where}: {path} is empty"


def test_identity_init_applies_the_clients_file_with_orders_client(
    rendered: list[Doc], tmp_path: Path
) -> None:
    """identity's init container runs `init --clients-file` on a mounted ConfigMap; every
    secret_file the file names is mounted; orders' client is there, with the scopes the saga
    needs, and orders is given the same id and the same secret."""
    init, _environ = container_environment(rendered, "identity", tmp_path / "init", init=True)
    command = " ".join(init["command"])
    match = re.search(r"python -m services\.identity init .*--clients-file (\S+)", command)
    assert match, command
    clients_path = Path(str(tmp_path / "init") + match.group(1))
    clients = yaml.safe_load(clients_path.read_text())["clients"]
    by_id = {c["client_id"]: c for c in clients}
    for client in clients:
        if client["token_endpoint_auth_method"] != "none":
            secret = Path(client["secret_file"])
            assert secret.is_file() and len(secret.read_text().strip()) >= 32, client
    orders_client = by_id["orders-service"]
    assert orders_client["grant_types"] == ["client_credentials"]
    assert set(orders_client["scope"].split()) == {
        "catalog:read",
        "inventory:write",
        "payments:write",
    }
    assert "portico-public" in by_id
    namespace = _by_kind(rendered, "Deployment")["identity"]["metadata"]["namespace"]
    assert ("portico-dev" in by_id) == (namespace == "portico-dev")
    _orders, orders_env = container_environment(rendered, "orders", tmp_path / "orders")
    assert orders_env["ORDERS_CLIENT_ID"] == "orders-service"
    given = Path(orders_env["ORDERS_CLIENT_SECRET_FILE"]).read_text()
    assert given == Path(orders_client["secret_file"]).read_text()


def test_secrets_are_placeholders_only() -> None:
    examples = sorted(ROOT.glob("overlays/*/secrets/*.example"))
    assert examples
    for example in examples:
        text = example.read_text()
        assert "CHANGE-ME" in text or "placeholder" in text, example
    ignore = (ROOT / ".gitignore").read_text()
    assert "overlays/*/secrets/*" in ignore and "!overlays/*/secrets/*.example" in ignore


def _kustomize_binary() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_real_kustomize_agrees_with_the_test_renderer(overlay: str, tmp_path: Path) -> None:
    command = _kustomize_binary()
    if command is None:
        pytest.skip("no kustomize or kubectl binary on PATH (the test renderer still ran)")
    tree = tmp_path / "k8s"
    shutil.copytree(ROOT, tree)
    for example in tree.glob("overlays/*/secrets/*.example"):
        target = example.with_name(example.name.removesuffix(".example"))
        if not target.exists():
            shutil.copy(example, target)
    result = subprocess.run(
        [*command, str(tree / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    theirs = [d for d in yaml.safe_load_all(result.stdout) if d]

    def normal(docs: list[Doc]) -> list[str]:
        docs = copy.deepcopy(docs)
        for doc in docs:  # kustomize may wrap long base64 lines
            if doc["kind"] == "Secret":
                doc["data"] = {k: base64.b64decode(v).decode() for k, v in doc["data"].items()}
        text = json.dumps(docs)
        text = re.sub(r'("[a-z][a-z0-9-]*)-[a-z0-9]{10}"', r'\1"', text)  # hash suffixes
        return sorted(json.dumps(d, sort_keys=True) for d in json.loads(text))

    assert normal(theirs) == normal(render(overlay))
