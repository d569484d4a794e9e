"""The signing keys' JSON file (IDENTITY_KEYS_FILE), shared by every gunicorn worker.

Workers re-read the file whenever its modification stamp changes, so `rotate-keys` run from a
shell reaches all of them without a restart. Private keys live only in this file (mode 0600).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from joserfc.jwk import KeySet, RSAKey

from ..domain.keys import KeyRing, SigningKey
from .files import exclusive_lock, write_private

__all__ = ["KeyStore", "generate_key"]

_VERSION = 1


def generate_key(now: float, activates_at: float) -> SigningKey:
    key = RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"}, auto_kid=True)
    jwk = key.as_dict(private=True)
    return SigningKey(kid=str(key.kid), jwk=jwk, created_at=now, activates_at=activates_at)


def _to_json(ring: KeyRing) -> bytes:
    doc = {
        "version": _VERSION,
        "keys": [
            {
                "kid": k.kid,
                "created_at": k.created_at,
                "activates_at": k.activates_at,
                "retired_at": k.retired_at,
                "jwk": k.jwk,
            }
            for k in ring.keys
        ],
    }
    return json.dumps(doc, indent=2).encode()


def _from_json(raw: bytes) -> KeyRing:
    doc: dict[str, Any] = json.loads(raw)
    return KeyRing(
        tuple(
            SigningKey(
                kid=entry["kid"],
                jwk=entry["jwk"],
                created_at=float(entry["created_at"]),
                activates_at=float(entry["activates_at"]),
                retired_at=None if entry.get("retired_at") is None else float(entry["retired_at"]),
            )
            for entry in doc.get("keys", [])
        )
    )


class KeyStore:
    def __init__(
        self,
        path: str | Path,
        *,
        token_ttl: float,
        activation_delay: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.token_ttl = token_ttl
        self.activation_delay = activation_delay
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._ring = KeyRing()
        self._signers: dict[str, KeySet] = {}

    def ring(self) -> KeyRing:
        """The key ring, re-read when the file changed (one `stat` per call)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return KeyRing()
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._ring = _from_json(self.path.read_bytes())
                self._stamp = stamp
                self._signers = {}
            return self._ring

    def signing_key(self) -> SigningKey:
        return self.ring().signing_key(self._clock())

    def signer(self) -> KeySet:
        """The active private key as a joserfc key set (so the JWT header gets its `kid`)."""
        key = self.signing_key()
        with self._lock:
            signer = self._signers.get(key.kid)
            if signer is None:
                signer = self._signers[key.kid] = KeySet([RSAKey.import_key(key.jwk)])
            return signer

    def jwks(self) -> dict[str, Any]:
        """The public JWKS: pending, active and still-needed retired keys."""
        keys = self.ring().published(self._clock(), self.token_ttl)
        return {"keys": [k.public_jwk() for k in keys]}

    def ensure(self) -> SigningKey | None:
        """Create the first key, active at once, if there is none. Returns it when created."""
        with exclusive_lock(self.path):
            ring = self._read()
            if ring.keys:
                return None
            now = self._clock()
            key = generate_key(now, activates_at=now)
            write_private(self.path, _to_json(KeyRing((key,))))
            return key

    def rotate(self) -> SigningKey:
        """Add a key that signs after the activation delay; retire and prune the others."""
        with exclusive_lock(self.path):
            now = self._clock()
            ring = self._read()
            # With no key at all there is nothing to wait for: the first key signs at once.
            delay = self.activation_delay if ring.keys else 0.0
            key = generate_key(now, activates_at=now + delay)
            ring = ring.rotate(key, now, self.token_ttl)
            write_private(self.path, _to_json(ring))
            return key

    def _read(self) -> KeyRing:
        try:
            return _from_json(self.path.read_bytes())
        except FileNotFoundError:
            return KeyRing()
