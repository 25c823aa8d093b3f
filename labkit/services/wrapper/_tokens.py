"""Secrets the wrapper checks on requests: the admin token and the optional API key of POST /generate.

Both are read from a file at start, compared in constant time, and refused when sent in a URL.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from labkit.secret_files import read_token_file

__all__ = [
    "API_KEY_HEADER",
    "URL_SECRET_NAMES",
    "api_key_checker",
    "bearer_token",
    "read_token_file",
    "require_secret",
    "secret_in_url",
]

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
# Query parameters that would carry a secret in the URL, where access logs and shell history keep it.
URL_SECRET_NAMES = ("token", "access_token", "api_key", "apikey", "key")
_USE_A_HEADER = f"send it as the header Authorization: Bearer <key> or {API_KEY_HEADER}: <key>"

# Declared only so that the OpenAPI document names the schemes (and schemathesis sends them); the
# checks below read the headers themselves, so that every refusal has the lab's wording and metrics.
_API_BEARER = HTTPBearer(
    scheme_name="apiKeyBearer", description="the API key as a bearer token", auto_error=False
)
_API_KEY_HEADER = APIKeyHeader(
    name=API_KEY_HEADER, scheme_name="apiKeyHeader", description="the API key", auto_error=False
)


def secret_in_url(request: Request) -> bool:
    """Whether the query string has a parameter that looks like a token or key."""
    return any(name.lower() in URL_SECRET_NAMES for name in request.query_params)


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, None without one."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None


def _matches(given: str | None, expected: bytes) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected)


def require_secret(
    request: Request,
    expected: bytes,
    *,
    what: str,
    hint: str,
    key_header: str | None = None,
    on_refused: Callable[[], None] | None = None,
) -> None:
    """Let `request` through only when it carries `expected` as a bearer token (or in `key_header`).

    A secret in the URL is answered 400 without comparing anything, a missing or wrong one 401 with
    WWW-Authenticate; `on_refused` runs before either. Refusals are logged by method and path, never with
    the query (it may hold the secret) and never with the secret itself.
    """
    if secret_in_url(request):
        reason, status, message = "carried a secret in its URL", 400, f"never put the {what} in the URL"
        message += f" (logs keep URLs); {hint}"
    elif _matches(bearer_token(request), expected) or (
        key_header is not None and _matches(request.headers.get(key_header), expected)
    ):
        return
    else:
        reason, status, message = f"without the right {what}", 401, f"missing or wrong {what}; {hint}"
    if on_refused is not None:
        on_refused()
    logger.warning("request refused: %s %s %s", request.method, request.url.path, reason)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    raise HTTPException(status, message, headers=headers)


def api_key_checker(key: str, on_refused: Callable[[], None]) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that lets a request through only with `key`, as a bearer token or X-API-Key
    (see `require_secret`; `on_refused` counts the refusal)."""
    expected = key.encode()

    async def require_api_key(
        request: Request,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_API_BEARER)],
        _header: Annotated[str | None, Security(_API_KEY_HEADER)],
    ) -> None:
        require_secret(
            request, expected, what="API key", hint=_USE_A_HEADER, key_header=API_KEY_HEADER,
            on_refused=on_refused,
        )  # fmt: skip

    return require_api_key
