"""The microservice chassis: cross-cutting code written once for the gateway and every service.

Framework glue lives in `chassis.flask` and `chassis.aiohttp`; everything else is re-exported
here, so this file is the package's public surface.
"""

from .db import create_async_db_engine, create_db_engine, ping, sqlite_url, sync_url
from .health import LIVE, run_checks, run_checks_async
from .logging import (
    REQUEST_ID_HEADER,
    accept_request_id,
    configure_logging,
    correlation_id,
    new_request_id,
)
from .metrics import RequestMetrics
from .problems import PROBLEM_JSON, Problem, problem_document, validation_problem
from .settings import ConfigError, from_env
from .tokens import (
    AsyncTokenVerifier,
    Claims,
    InsufficientScope,
    KeysUnavailable,
    MissingToken,
    TokenError,
    TokenPolicy,
    TokenSettings,
    TokenVerifier,
    bearer_token,
    fetch_jwks_sync,
    token_problem,
)
from .validation import (
    MAX_INTEGER_DIGITS,
    MAX_JSON_DEPTH,
    BoundedDecimal,
    BoundedInteger,
    FullMatch,
    OutOfBounds,
    load_json,
    parse_decimal,
    parse_integer,
    query_params,
)

__all__ = [
    "LIVE",
    "MAX_INTEGER_DIGITS",
    "MAX_JSON_DEPTH",
    "PROBLEM_JSON",
    "REQUEST_ID_HEADER",
    "AsyncTokenVerifier",
    "BoundedDecimal",
    "BoundedInteger",
    "Claims",
    "ConfigError",
    "FullMatch",
    "InsufficientScope",
    "KeysUnavailable",
    "MissingToken",
    "OutOfBounds",
    "Problem",
    "RequestMetrics",
    "TokenError",
    "TokenPolicy",
    "TokenSettings",
    "TokenVerifier",
    "accept_request_id",
    "bearer_token",
    "configure_logging",
    "correlation_id",
    "create_async_db_engine",
    "create_db_engine",
    "fetch_jwks_sync",
    "from_env",
    "load_json",
    "new_request_id",
    "parse_decimal",
    "parse_integer",
    "ping",
    "problem_document",
    "query_params",
    "run_checks",
    "run_checks_async",
    "sqlite_url",
    "sync_url",
    "token_problem",
    "validation_problem",
]
