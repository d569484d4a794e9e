"""Pure rules: login throttling, password and secret hashing, the key ring."""

from __future__ import annotations

from services.identity.domain.keys import EXPIRY_MARGIN, KeyRing, SigningKey
from services.identity.domain.passwords import Passwords, secret_digest, secret_matches
from services.identity.domain.throttle import Throttle


def test_throttle_blocks_after_max_failures_until_the_oldest_ages_out() -> None:
    policy = Throttle(limit=5, window=300)
    assert policy.retry_after([], 1000) == 0
    assert policy.retry_after([900, 910, 920, 930], 1000) == 0
    assert policy.retry_after([900, 910, 920, 930, 940], 1000) == 200
    assert policy.retry_after([600, 910, 920, 930, 940], 1000) == 0  # 600 is out of the window


def test_passwords_are_argon2id_and_salted() -> None:
    passwords = Passwords()
    one, two = passwords.hash("s3cret-pass"), passwords.hash("s3cret-pass")
    assert one.startswith("$argon2id$") and one != two
    assert passwords.verify(one, "s3cret-pass")
    assert not passwords.verify(one, "other")
    assert not passwords.verify(None, "portico-no-such-user")  # unknown user never matches
    assert not passwords.verify("garbage", "s3cret-pass")


def test_secret_digest_matching() -> None:
    digest = secret_digest("abc")
    assert secret_matches(digest, "abc")
    assert not secret_matches(digest, "abd")
    assert not secret_matches(None, "abc")


def _key(kid: str, activates_at: float, retired_at: float | None = None) -> SigningKey:
    return SigningKey(
        kid, {"kty": "RSA", "n": "n", "e": "AQAB", "d": "secret"}, 0, activates_at, retired_at
    )


def test_key_ring_rotation_and_pruning() -> None:
    ring = KeyRing((_key("a", 0),))
    ring = ring.rotate(_key("b", 115), now=100, token_ttl=900)
    assert ring.signing_key(114).kid == "a"
    assert ring.signing_key(115).kid == "b"
    assert [k.retired_at for k in ring.keys] == [115, None]
    keep_until = 115 + 900 + EXPIRY_MARGIN
    assert [k.kid for k in ring.published(keep_until - 1, 900)] == ["a", "b"]
    assert [k.kid for k in ring.published(keep_until, 900)] == ["b"]
    assert "d" not in ring.keys[0].public_jwk()
