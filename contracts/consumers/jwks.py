"""Every token verifier as a consumer of identity's JWKS: the gateway (`gateway.auth`'s
verifier over its own HTTP/1.1 transport) and each service that builds its verifier from
`chassis.TokenSettings` (sync for the Flask services, async for the aiohttp ones, as its
app does) fetch the key set from a Pact mock server and must then accept a token signed
with the example key - so the contract names every field the verifier needs.

Labelled `jwks`; the gateway's, orders' and views' interactions are merged into the pact files their
own consumer tests wrote earlier in the run (`contracts.runner.CONSUMERS` order).
"""

from __future__ import annotations

import asyncio
import importlib
import math
import random
from contextlib import ExitStack
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa
from pact import Pact, match

from chassis import TokenSettings

from ..boundaries import ISSUER, JWKS, jwks_consumers
from ..tokens import TestIssuer
from . import ConsumerFailed, label

__all__ = ["JWKS_PATH", "run"]

JWKS_PATH = "/.well-known/jwks.json"
# their pact with identity is written by their own module
MERGED = ("gateway", "orders", "views")
_B64URL = r"^[A-Za-z0-9_-]+$"


_SMALL = [n for n in range(3, 2000, 2) if all(n % d for d in range(3, int(n**0.5) + 1, 2))]


def _probable_prime(rng: random.Random, bits: int) -> int:
    while True:
        n = rng.getrandbits(bits) | (1 << (bits - 1)) | 1
        if any(n % d == 0 for d in _SMALL) or pow(2, n - 1, n) != 1:
            continue
        if all(pow(a, n - 1, n) == 1 for a in (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)):
            return n


def example_issuer() -> TestIssuer:
    """A TestIssuer whose RSA key comes from a fixed seed, so the example JWKS - and with it
    the pact's content hash, which can-i-deploy matches verifications by - is the same every
    run. The key signs only the consumer tests' own tokens; the provider answers with its own."""
    rng = random.Random("portico-contracts-jwks")
    e = 65537
    while True:
        p, q = _probable_prime(rng, 1024), _probable_prime(rng, 1024)
        phi = (p - 1) * (q - 1)
        if p != q and math.gcd(e, phi) == 1:
            break
    d = pow(e, -1, phi)
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), rsa.RSAPublicNumbers(e, p * q)
    )
    issuer = TestIssuer(kid="contract-key")
    issuer.private_key = numbers.private_key()
    return issuer


def _define(pact: Pact, consumer: str, issuer: TestIssuer) -> None:
    jwk = issuer.public_jwk()
    i = pact.upon_receiving(f"the JWKS {consumer} verifies tokens with")
    label(i, JWKS)
    i.with_request("GET", JWKS_PATH)
    i.will_respond_with(200).with_body(
        {
            "keys": match.each_like(
                {
                    "kty": "RSA",
                    "kid": match.str(jwk["kid"]),
                    "use": "sig",
                    "alg": match.regex("RS256", regex=r"^(RS|PS|ES)(256|384|512)$"),
                    "n": match.regex(jwk["n"], regex=_B64URL),
                    "e": match.regex(jwk["e"], regex=_B64URL),
                }
            )
        },
        content_type="application/json",
    )


async def _gateway_verifies(url: str, issuer: TestIssuer) -> None:
    from gateway.app import make_transport
    from gateway.auth import make_verifier
    from gateway.config import AuthConfig

    transport = make_transport("http1", {})
    try:
        config = AuthConfig(issuer.issuer, issuer.audience, url, 10.0)
        await make_verifier(config, transport).verify(issuer.token(["profile"]))
    finally:
        await transport.close()


async def _service_verifies(service: str, url: str, issuer: TestIssuer) -> None:
    settings = TokenSettings(issuer=issuer.issuer, audience=issuer.audience, jwks_url=url)
    app = importlib.import_module(f"services.{service}.app")
    token = issuer.token(["profile"])
    if hasattr(app, "AsyncTokenVerifier"):
        await settings.async_verifier().verify(token)
    else:
        await asyncio.to_thread(settings.sync_verifier().verify, token)


def run(pact_dir: Path, consumers: list[str] | None = None) -> list[Path]:
    consumers = jwks_consumers() if consumers is None else consumers
    issuer = example_issuer()
    pacts = {c: Pact(c, ISSUER).with_specification("V4") for c in consumers}
    for c, pact in pacts.items():
        _define(pact, c, issuer)
    problems: list[str] = []
    with ExitStack() as stack:
        for c, pact in pacts.items():
            server = stack.enter_context(pact.serve(addr="127.0.0.1", raises=False, verbose=False))
            url = str(server.url).rstrip("/") + JWKS_PATH
            try:
                if c == "gateway":
                    asyncio.run(_gateway_verifies(url, issuer))
                else:
                    asyncio.run(_service_verifies(c, url, issuer))
            except Exception as exc:
                problems.append(f"{c} -> {ISSUER}: the JWKS: {type(exc).__name__}: {exc}")
            if not server.matched:
                problems.extend(f"{c} -> {ISSUER}: mock server: {m}" for m in server.mismatches)
    if problems:
        raise ConsumerFailed("; ".join(problems))
    written = []
    for c, pact in pacts.items():
        pact.write_file(pact_dir, overwrite=c not in MERGED)
        written.append(pact_dir / f"{c}-{ISSUER}.json")
    return written
