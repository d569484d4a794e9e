"""Verification results per version, can-i-deploy, and the Pact Broker.

Every run records, in `var/contracts/verifications.json` ($CONTRACTS_RESULTS), each pact it
verified: the consumer and its version, the provider and its version (both the git commit,
or $PACT_CONSUMER_VERSION / $PACT_PROVIDER_VERSION), the pact's content hash and whether
every interaction passed. A pact is recorded per consumer version; a verification counts for
every consumer version whose pact has the same content (as the broker's pact versions do).

`can_i_deploy(service, version)` answers from that matrix: `service` at `version` may go
when every pact it wrote at that version was verified, successfully, by each provider's
version it would meet, and every consumer version it would meet had its pact with `service`
verified, successfully, by `version`. The version met is the one given (`--with name=sha`),
else the latest one recorded for that service. A missing or failed pair says no.

With $PACT_BROKER_BASE_URL the broker is the matrix: `publish` PUTs each pact under its
consumer version and POSTs its verification result to the pact's
`pb:publish-verification-results` link; `broker_can_i_deploy` asks the broker's
`/can-i-deploy`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

__all__ = [
    "RESULTS_PATH",
    "Answer",
    "BrokerError",
    "Results",
    "Verification",
    "broker_can_i_deploy",
    "can_i_deploy",
    "pact_sha",
    "publish",
    "results_path",
    "version",
]

RESULTS_PATH = Path("var/contracts/verifications.json")


def results_path() -> Path:
    return Path(os.environ.get("CONTRACTS_RESULTS") or RESULTS_PATH)


def version(env_name: str) -> str:
    """$`env_name`, else the git commit of the work tree, else "dev"."""
    given = os.environ.get(env_name)
    if given:
        return given
    out = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return out or "dev"


def pact_sha(content: bytes) -> str:
    """The pact's content hash (key order and whitespace do not count)."""
    doc = json.loads(content)
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


@dataclass(frozen=True)
class Verification:
    consumer: str
    consumer_version: str
    provider: str
    provider_version: str
    pact_sha: str
    success: bool
    passed: int = 0
    failed: int = 0


@dataclass
class Results:
    """The recorded matrix: pacts per consumer version, verifications per provider version."""

    pacts: list[dict[str, Any]] = field(default_factory=list)
    verifications: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Results:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        return cls(list(doc.get("pacts", [])), list(doc.get("verifications", [])))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"pacts": self.pacts, "verifications": self.verifications}
        path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")

    def record(self, results: Iterable[Verification]) -> None:
        """Add (or replace) each pact and its verification, stamped in recording order."""
        for v in results:
            now = time.time()
            pact = {
                "consumer": v.consumer,
                "consumer_version": v.consumer_version,
                "provider": v.provider,
                "pact_sha": v.pact_sha,
            }
            self.pacts = [
                p
                for p in self.pacts
                if (p["consumer"], p["consumer_version"], p["provider"])
                != (v.consumer, v.consumer_version, v.provider)
            ]
            self.pacts.append({**pact, "recorded_at": now})
            row = {**asdict(v), "recorded_at": now}
            self.verifications = [
                r
                for r in self.verifications
                if (r["consumer"], r["provider"], r["pact_sha"], r["provider_version"])
                != (v.consumer, v.provider, v.pact_sha, v.provider_version)
            ]
            self.verifications.append(row)

    # --- queries ---------------------------------------------------------------------------

    def _versions(self, name: str) -> list[tuple[float, str]]:
        seen = [
            (p["recorded_at"], p["consumer_version"]) for p in self.pacts if p["consumer"] == name
        ]
        seen += [
            (r["recorded_at"], r["provider_version"])
            for r in self.verifications
            if r["provider"] == name
        ]
        return sorted(seen)

    def latest(self, name: str) -> str | None:
        found = self._versions(name)
        return found[-1][1] if found else None

    def resolve(self, name: str, given: str) -> str | None:
        """`given` as recorded, or the one recorded version it abbreviates."""
        known = {v for _, v in self._versions(name)}
        if given in known:
            return given
        matches = {v for v in known if v.startswith(given)}
        return matches.pop() if len(matches) == 1 else None

    def pact(self, consumer: str, consumer_version: str, provider: str) -> str | None:
        for p in self.pacts:
            if (p["consumer"], p["consumer_version"], p["provider"]) == (
                consumer,
                consumer_version,
                provider,
            ):
                return str(p["pact_sha"])
        return None

    def verified(
        self, consumer: str, provider: str, sha: str, provider_version: str
    ) -> bool | None:
        """True/False: that verification's result; None: never verified."""
        for r in reversed(self.verifications):
            if (r["consumer"], r["provider"], r["pact_sha"], r["provider_version"]) == (
                consumer,
                provider,
                sha,
                provider_version,
            ):
                return bool(r["success"])
        return None


@dataclass
class Answer:
    deployable: bool
    rows: list[tuple[str, str, str, str, str]]  # consumer, c.version, provider, p.version, ok
    reasons: list[str]

    def render(self) -> str:
        head = ("CONSUMER", "C.VERSION", "PROVIDER", "P.VERSION", "SUCCESS?")
        table = [head, *self.rows]
        widths = [max(len(r[i]) for r in table) for i in range(5)]
        lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        lines.extend(f"  - {r}" for r in self.reasons)
        lines.append("can-i-deploy: yes" if self.deployable else "can-i-deploy: NO")
        return "\n".join(lines)


def can_i_deploy(
    results: Results, service: str, at: str, partners: Mapping[str, str] | None = None
) -> Answer:
    """May `service` at version `at` be deployed next to `partners` (name -> version; the
    latest recorded version of anyone not named)?"""
    partners = dict(partners or {})
    rows: list[tuple[str, str, str, str, str]] = []
    reasons: list[str] = []
    resolved = results.resolve(service, at)
    if resolved is None:
        return Answer(False, [], [f"no recorded pact or verification for {service} at {at}"])

    def partner_version(name: str) -> str | None:
        given = partners.get(name)
        return results.resolve(name, given) if given else results.latest(name)

    def check(consumer: str, cv: str, provider: str, pv: str | None, sha: str) -> None:
        if pv is None:
            rows.append((consumer, cv, provider, "???", "???"))
            reasons.append(f"{consumer} {cv} -> {provider}: no version of {provider} recorded")
            return
        ok = results.verified(consumer, provider, sha, pv)
        rows.append((consumer, cv, provider, pv, {True: "true", False: "false"}.get(ok, "???")))
        if ok is None:
            reasons.append(f"{consumer} {cv} -> {provider} {pv}: never verified")
        elif not ok:
            reasons.append(f"{consumer} {cv} -> {provider} {pv}: verification failed")

    providers = sorted(
        {
            p["provider"]
            for p in results.pacts
            if (p["consumer"], p["consumer_version"]) == (service, resolved)
        }
    )
    for provider in providers:
        sha = results.pact(service, resolved, provider)
        assert sha is not None
        check(service, resolved, provider, partner_version(provider), sha)
    consumers = sorted(
        {p["consumer"] for p in results.pacts if p["provider"] == service} - {service}
    )
    for consumer in consumers:
        cv = partner_version(consumer)
        sha = results.pact(consumer, cv, service) if cv else None
        if cv is None or sha is None:
            continue  # that version of the consumer does not talk to `service`
        check(consumer, cv, service, resolved, sha)
    if not rows:
        reasons.append(f"{service} {resolved} has no recorded pact either way")
    return Answer(not reasons, rows, reasons)


# --- the Pact Broker ----------------------------------------------------------------------


class BrokerError(Exception):
    """The broker refused a request or could not be reached; the message names which."""


def _request(
    method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 10.0
) -> Any:
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/hal+json, application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raise BrokerError(f"{method} {url}: {exc.code} {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise BrokerError(f"{method} {url}: {exc}") from None
    try:
        return json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        raise BrokerError(f"{method} {url}: the answer is not JSON") from None


def _link(doc: Any, rel: str) -> str | None:
    href = ((doc or {}).get("_links") or {}).get(rel, {}) if isinstance(doc, dict) else {}
    return href.get("href") if isinstance(href, dict) else None


def publish(
    base: str,
    pacts: Sequence[tuple[Path, Verification]],
    token: str | None = None,
) -> list[str]:
    """PUT each pact under its consumer version, then POST its verification result to the
    pact's `pb:publish-verification-results` link. Returns the errors, each naming the pact."""
    base = base.rstrip("/")
    errors: list[str] = []
    for path, v in pacts:
        url = (
            f"{base}/pacts/provider/{quote(v.provider, safe='')}"
            f"/consumer/{quote(v.consumer, safe='')}/version/{quote(v.consumer_version, safe='')}"
        )
        try:
            doc = _request("PUT", url, path.read_bytes(), token)
            href = _link(doc, "pb:publish-verification-results")
            if href is None:
                href = _link(_request("GET", url, token=token), "pb:publish-verification-results")
            if href is None:
                raise BrokerError(f"GET {url}: no pb:publish-verification-results link")
            result = {
                "success": v.success,
                "providerApplicationVersion": v.provider_version,
                "verifiedBy": {"implementation": "portico contracts", "version": "1"},
                "testResults": {"passed": v.passed, "failed": v.failed},
            }
            _request("POST", href, result, token)
        except BrokerError as exc:
            errors.append(f"publishing {v.consumer} -> {v.provider} ({path.name}): {exc}")
    return errors


def broker_can_i_deploy(
    base: str, service: str, at: str, environment: str | None = None, token: str | None = None
) -> Answer:
    """The broker's own answer (`GET /can-i-deploy`), in the same shape as the local one."""
    query = {"pacticipant": service, "version": at}
    if environment:
        query["environment"] = environment
    doc = _request("GET", f"{base.rstrip('/')}/can-i-deploy?{urlencode(query)}", token=token)
    summary = doc.get("summary") or {}
    rows = []
    for row in doc.get("matrix") or []:
        c, p, v = (
            row.get("consumer") or {},
            row.get("provider") or {},
            row.get("verificationResult"),
        )
        rows.append(
            (
                str(c.get("name", "?")),
                str((c.get("version") or {}).get("number", "???")),
                str(p.get("name", "?")),
                str((p.get("version") or {}).get("number", "???")),
                "???" if not v else str(bool(v.get("success"))).lower(),
            )
        )
    reason = summary.get("reason")
    return Answer(summary.get("deployable") is True, rows, [str(reason)] if reason else [])
