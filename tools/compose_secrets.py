"""The Docker secrets `compose/compose.yaml` mounts, generated into `compose/secrets/`.

    python -m tools.compose_secrets [--dir compose/secrets]     # or: make compose-secrets

One file per secret, each a random value or built from them (a database URL carries its
role's password), so the values agree with each other. Files that exist are kept: PostgreSQL
and RabbitMQ set their passwords only on the first start of an empty volume, so a secret must
not change under them (delete the volume and the file together to change one). The folder is
git-ignored and 0700; the files are 0644 because compose bind-mounts them as they are, and the
containers' users (postgres, rabbitmq, portico 10001) are not the file's owner.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / "compose" / "secrets"
SERVICES = ("identity", "catalog", "inventory", "orders", "payments", "notifications", "views")
ASYNC = frozenset({"inventory", "orders", "notifications", "views"})  # asyncpg; others psycopg


def _password() -> str:
    return secrets.token_urlsafe(24)  # URL-safe: no escaping inside the URLs below


def _client_secret() -> str:
    return secrets.token_urlsafe(32)  # 43 characters: identity wants at least 32


def _derived() -> dict[str, Callable[[dict[str, str]], str]]:
    """Secrets computed from the random ones (recomputed on every run, so they follow them)."""
    out: dict[str, Callable[[dict[str, str]], str]] = {}
    for name in SERVICES:
        driver = "asyncpg" if name in ASYNC else "psycopg"

        def url(v: dict[str, str], name: str = name, driver: str = driver) -> str:
            password = v[f"{name}_db_password"]
            return f"postgresql+{driver}://{name}:{password}@postgres:5432/{name}"

        out[f"{name}_database_url"] = url
    out["broker_url"] = lambda v: f"amqp://portico:{v['rabbitmq_password']}@rabbitmq:5672//"
    out["rabbitmq_conf"] = lambda v: (
        f"default_user = portico\ndefault_pass = {v['rabbitmq_password']}\n"
    )
    out["redis_url"] = lambda v: f"redis://:{v['redis_password']}@redis:6379/0"
    out["redis_conf"] = lambda v: f"requirepass {v['redis_password']}\n"
    return out


RANDOM: dict[str, Callable[[], str]] = {
    "postgres_password": _password,
    **{f"{name}_db_password": _password for name in SERVICES},
    "rabbitmq_password": _password,
    "redis_password": _password,
    "grafana_admin_password": _password,
    "identity_secret_key": lambda: secrets.token_urlsafe(48),
    "orders_client_secret": _client_secret,
    "views_client_secret": _client_secret,
    "dev_client_secret": _client_secret,
    "internal_secret": _client_secret,  # identity's API-key feed, read by the gateway (ADR 0036)
}
NAMES = (*RANDOM, *_derived())


def generate(directory: Path = DEFAULT_DIR) -> dict[str, bool]:
    """Write every missing secret into `directory`; returns name -> whether it was written."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    values: dict[str, str] = {}
    written: dict[str, bool] = {}
    for name, make in RANDOM.items():
        path = directory / name
        if path.exists():
            values[name] = path.read_text().strip()
            written[name] = False
        else:
            values[name] = make()
            _write(path, values[name] + "\n")
            written[name] = True
    for name, build in _derived().items():
        path = directory / name
        text = build(values)
        text = text if text.endswith("\n") else text + "\n"
        written[name] = not path.exists() or path.read_text() != text
        if written[name]:
            _write(path, text)
    return written


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.compose_secrets", description=__doc__)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args(argv)
    written = generate(args.dir)
    new = sorted(n for n, w in written.items() if w)
    print(f"{args.dir}: {len(written)} secrets, written: {', '.join(new) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
