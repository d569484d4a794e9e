"""Identity settings, read once from `IDENTITY_*` variables (plus the shared `PORTICO_*` token
settings, so that the issuer and audience stamped into tokens are exactly what verifiers expect).

Paths are relative to the working directory, like every service's `var/` data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from chassis import ConfigError, TokenSettings, from_env
from chassis.settings import not_negative, positive, secret

__all__ = ["IdentitySettings"]


@dataclass(frozen=True)
class IdentitySettings:
    database_url: str = secret("sqlite:///var/identity/identity.db")
    keys_file: str = "var/identity/signing-keys.json"
    # Flask's SECRET_KEY (signs the session cookie that carries the CSRF token). When unset it
    # is read from `secret_key_file` (a mounted secret), generated there once when missing, so
    # every gunicorn worker shares it. Setting both variables is refused.
    secret_key: str = secret("")
    secret_key_file: str = "var/identity/secret-key"
    access_token_ttl: int = field(default=900, metadata={"check": positive})
    refresh_token_ttl: int = field(default=14 * 24 * 3600, metadata={"check": positive})
    authorization_code_ttl: int = field(default=300, metadata={"check": positive})
    # A new key is published at once but signs only after this delay, which must exceed the
    # verifiers' JWKS refetch interval (PORTICO_JWKS_REFETCH_INTERVAL, 10 s).
    key_activation_delay: float = field(default=15.0, metadata={"check": not_negative})
    dev_redirect_uris: tuple[str, ...] = ()
    login_max_failures: int = field(default=5, metadata={"check": positive})
    login_window: int = field(default=300, metadata={"check": positive})
    # Self-registrations (`POST /api/v1/users`) per client address within the window.
    register_max_attempts: int = field(default=10, metadata={"check": positive})
    register_window: int = field(default=3600, metadata={"check": positive})
    # How many reverse proxies (the gateway, nginx) sit in front and append X-Forwarded-For.
    # 0 trusts no forwarding header: the login and registration throttles then key on the peer
    # address.
    proxy_count: int = field(default=0, metadata={"check": not_negative})
    cookie_secure: bool = False
    # The declarative clients file `init` applies (services/identity/README.md); "" = none.
    clients_file: str = ""
    # The shared secret the gateway sends (`X-Internal-Token`) to read API keys and exchange
    # one for a short-lived token (ADR 0036); "" turns `/internal/v1/api-keys` off (404).
    internal_secret: str = secret("")
    # Lifetime of the access token minted for an API key (the gateway caches it that long).
    api_key_token_ttl: int = field(default=300, metadata={"check": positive})
    tokens: TokenSettings = field(default_factory=TokenSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> IdentitySettings:
        settings = from_env(cls, "IDENTITY_", environ)
        tokens = TokenSettings.from_env(environ)
        if settings.key_activation_delay <= tokens.jwks_refetch_interval:
            # ADR 0002: otherwise a verifier may see a new kid before it may refetch the JWKS
            raise ConfigError(
                f"invalid configuration: IDENTITY_KEY_ACTIVATION_DELAY="
                f"{settings.key_activation_delay:g} must exceed PORTICO_JWKS_REFETCH_INTERVAL="
                f"{tokens.jwks_refetch_interval:g}, or a rotated key could sign tokens that "
                "verifiers reject"
            )
        if settings.internal_secret and len(settings.internal_secret) < 32:
            raise ConfigError(
                "invalid configuration: IDENTITY_INTERNAL_SECRET must be at least 32 characters"
            )
        if settings.api_key_token_ttl > settings.access_token_ttl:
            # the signing key ring keeps retired keys published for access_token_ttl only
            raise ConfigError(
                "invalid configuration: IDENTITY_API_KEY_TOKEN_TTL must not exceed "
                "IDENTITY_ACCESS_TOKEN_TTL"
            )
        return dataclasses.replace(settings, tokens=tokens)
