"""Secret settings read from `<NAME>_FILE` (Docker secrets, Kubernetes Secret volumes).

The mechanism lives once in `chassis.settings`; the last tests check that every service's
secret settings (database URLs, broker URL, orders' client secret, identity's secret key) and
the gateway's Redis URL are declared secret, so each of them accepts the `_FILE` form.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from chassis import ConfigError, from_env
from chassis.messaging.events import BrokerSettings
from chassis.settings import env_name, is_secret, secret, secret_environ

SERVICES = ("identity", "catalog", "inventory", "orders", "payments", "notifications", "views")


def _ok(value: str) -> str | None:
    return None if value.startswith("postgresql://") else "must be a postgresql:// URL"


@dataclass(frozen=True)
class Example:
    database_url: str = secret("postgresql://localhost/x", check=_ok)
    client_secret: str | None = secret(None)
    shared_url: str = secret("amqp://localhost", env="SHARED_URL")
    plain: str = "p"


def _file(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content)
    return str(path)


def test_value_comes_from_the_file_stripped(tmp_path: Path) -> None:
    env = {
        "EX_DATABASE_URL_FILE": _file(tmp_path, "db", "postgresql://u:pw@db/x\n"),
        "EX_CLIENT_SECRET_FILE": _file(tmp_path, "cs", "  s3cret \n"),
        "SHARED_URL_FILE": _file(tmp_path, "amqp", "amqp://u:pw@mq//"),
    }
    got = from_env(Example, "EX_", env)
    assert got.database_url == "postgresql://u:pw@db/x"
    assert got.client_secret == "s3cret"
    assert got.shared_url == "amqp://u:pw@mq//"


def test_the_variable_itself_still_works_and_defaults_stay() -> None:
    got = from_env(Example, "EX_", {"EX_CLIENT_SECRET": "direct"})
    assert got.client_secret == "direct"
    assert got.database_url == "postgresql://localhost/x"


def test_both_set_is_an_error_naming_both(tmp_path: Path) -> None:
    env = {"EX_CLIENT_SECRET": "a", "EX_CLIENT_SECRET_FILE": _file(tmp_path, "cs", "b")}
    with pytest.raises(ConfigError) as err:
        from_env(Example, "EX_", env)
    assert "EX_CLIENT_SECRET and EX_CLIENT_SECRET_FILE: set one, not both" in str(err.value)


def test_missing_file_is_an_error_naming_the_variable(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(ConfigError) as err:
        from_env(Example, "EX_", {"EX_DATABASE_URL_FILE": missing})
    message = str(err.value)
    assert f"EX_DATABASE_URL_FILE={missing!r}: cannot read the file" in message
    assert "No such file" in message


def test_unreadable_and_empty_files_are_errors(tmp_path: Path) -> None:
    directory = tmp_path / "dir"
    directory.mkdir()
    env = {
        "EX_DATABASE_URL_FILE": str(directory),  # a directory: read fails whoever we are
        "EX_CLIENT_SECRET_FILE": _file(tmp_path, "empty", "\n"),
    }
    with pytest.raises(ConfigError) as err:
        from_env(Example, "EX_", env)
    message = str(err.value)
    assert "EX_DATABASE_URL_FILE=" in message and "cannot read the file" in message
    assert "EX_CLIENT_SECRET_FILE=" in message and "the file is empty" in message


def test_a_file_value_is_checked_like_any_other_and_its_password_never_shown(
    tmp_path: Path,
) -> None:
    env = {"EX_DATABASE_URL_FILE": _file(tmp_path, "db", "mysql://user:hunter2@db/x")}
    with pytest.raises(ConfigError) as err:
        from_env(Example, "EX_", env)
    message = str(err.value)
    assert "EX_DATABASE_URL='mysql://user:***@db/x': must be a postgresql:// URL" in message
    assert "hunter2" not in message


def test_secrets_stay_out_of_repr() -> None:
    got = from_env(Example, "EX_", {"EX_CLIENT_SECRET": "hunter2"})
    assert "hunter2" not in repr(got)


def test_plain_fields_have_no_file_form(tmp_path: Path) -> None:
    got = from_env(Example, "EX_", {"EX_PLAIN_FILE": _file(tmp_path, "p", "from-file")})
    assert got.plain == "p"


def test_secret_environ_for_code_without_a_dataclass(tmp_path: Path) -> None:
    env = {"R_FILE": _file(tmp_path, "r", "redis://:pw@r:6379/0\n"), "OTHER": "x"}
    assert secret_environ(env, ["R", "UNSET"]) == {**env, "R": "redis://:pw@r:6379/0"}
    with pytest.raises(ConfigError, match="R and R_FILE: set one, not both"):
        secret_environ({**env, "R": "y"}, ["R"])


def _settings(service: str) -> type:
    module = importlib.import_module(f"services.{service}.settings")
    return next(getattr(module, n) for n in module.__all__ if n.endswith("Settings"))


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_database_url_accepts_a_file(service: str, tmp_path: Path) -> None:
    cls = _settings(service)
    (field,) = [f for f in dataclasses.fields(cls) if f.name == "database_url"]
    assert is_secret(field)
    prefix = f"{service.upper()}_"
    driver = "psycopg" if service in ("identity", "catalog", "payments") else "asyncpg"
    url = f"postgresql+{driver}://{service}:pw@db:5432/{service}"
    got = cls.from_env({f"{prefix}DATABASE_URL_FILE": _file(tmp_path, "db", url + "\n")})
    assert got.database_url == url


def test_the_other_secret_settings_are_declared_secret() -> None:
    secrets = {
        env_name(f, prefix)
        for cls, prefix in [
            *((_settings(s), f"{s.upper()}_") for s in SERVICES),
            (BrokerSettings, "PORTICO_"),
        ]
        for f in dataclasses.fields(cls)
        if is_secret(f)
    }
    assert {"ORDERS_CLIENT_SECRET", "IDENTITY_SECRET_KEY", "PORTICO_BROKER_URL"} <= secrets


def test_orders_client_secret_and_broker_url_from_files(tmp_path: Path) -> None:
    env = {
        "ORDERS_CLIENT_ID": "orders-service",
        "ORDERS_CLIENT_SECRET_FILE": _file(tmp_path, "cs", "s3cret\n"),
        "PORTICO_BROKER_URL_FILE": _file(tmp_path, "mq", "amqp://portico:pw@mq:5672//"),
    }
    assert _settings("orders").from_env(env).client_secret == "s3cret"
    assert BrokerSettings.from_env(env).url == "amqp://portico:pw@mq:5672//"


def test_identity_secret_key_file_keeps_its_meaning_but_not_both(tmp_path: Path) -> None:
    """IDENTITY_SECRET_KEY_FILE was already the file the key is read from (generated there
    when missing); declaring both variables is now refused."""
    cls = _settings("identity")
    path = _file(tmp_path, "key", "k")
    assert cls.from_env({"IDENTITY_SECRET_KEY_FILE": path}).secret_key_file == path
    with pytest.raises(ConfigError, match="IDENTITY_SECRET_KEY and IDENTITY_SECRET_KEY_FILE"):
        cls.from_env({"IDENTITY_SECRET_KEY": "k", "IDENTITY_SECRET_KEY_FILE": path})


def test_gateway_redis_url_from_a_file(tmp_path: Path) -> None:
    from gateway.config import DEFAULT_CONFIG_PATH, check_config, load_config

    url = "redis://:pw@127.0.0.1:6379/0"
    env = {"GATEWAY_REDIS_URL_FILE": _file(tmp_path, "redis", url + "\n")}
    assert load_config(DEFAULT_CONFIG_PATH, environ=env).rate_limits.redis_url == url
    bad = {"GATEWAY_REDIS_URL_FILE": str(tmp_path / "missing")}
    with pytest.raises(ConfigError, match=r"GATEWAY_REDIS_URL_FILE=.*cannot read the file"):
        load_config(DEFAULT_CONFIG_PATH, environ=bad)
    (line,) = check_config(DEFAULT_CONFIG_PATH, environ=bad)
    assert "GATEWAY_REDIS_URL_FILE" in line


def test_the_readme_lists_every_secret_setting_in_one_table() -> None:
    from gateway.apikeys import ApiKeySettings
    from gateway.config import SECRET_VARIABLES

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("### Secret settings", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([A-Z_]+)` \|", section, re.M))
    declared = {
        env_name(f, prefix)
        for cls, prefix in [
            *((_settings(s), f"{s.upper()}_") for s in SERVICES),
            (BrokerSettings, "PORTICO_"),
            (ApiKeySettings, "GATEWAY_API_KEYS_"),
        ]
        for f in dataclasses.fields(cls)
        if is_secret(f)
    }
    assert listed == declared | set(SECRET_VARIABLES)
