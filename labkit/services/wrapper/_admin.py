"""The wrapper's fault-injection admin API under /admin/, protected by the lab's bearer token.

Without a token file the API is disabled and answers 403 to everything; a token in the URL is refused.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from labkit.faults import WRAPPER_FAULTS_ROUTE, parse_wrapper_fault
from labkit.services.wrapper._faults import FaultTable
from labkit.services.wrapper._openapi import (
    EndedFaults,
    FaultList,
    InjectedFault,
    error_responses,
    fault_spec_request_body,
)
from labkit.services.wrapper._tokens import read_token_file, require_secret

__all__ = ["ADMIN_PREFIX", "admin_router", "read_admin_token"]

logger = logging.getLogger(__name__)

ADMIN_PREFIX, _FAULTS = WRAPPER_FAULTS_ROUTE.rsplit("/", 1)  # "/admin", "faults"
_USE_THE_HEADER = "send it as the header Authorization: Bearer <token>"
# Declared so that the OpenAPI document names the scheme; require_admin reads the header itself.
_ADMIN_BEARER = HTTPBearer(
    scheme_name="adminToken", description="the lab's admin token (in the lab directory)", auto_error=False
)


def read_admin_token(path: Path) -> str:
    """The admin token from `path` (surrounding whitespace dropped); ConfigError when unreadable or empty."""
    return read_token_file(path, what="admin token", flag="--admin-token-file")


def _spec_problems(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors with FastAPI's `body` prefix, the union's tag dropped from each location."""
    problems: list[dict[str, Any]] = []
    for e in exc.errors():
        loc, msg, kind = list(e["loc"]), str(e["msg"]), str(e["type"])
        if kind == "union_tag_invalid":
            expected = (e.get("ctx") or {}).get("expected_tags", "")
            loc, msg = ["kind"], f"unknown fault kind {e['input'].get('kind')!r}; use one of {expected}"
        elif kind == "union_tag_not_found":
            loc, msg = ["kind"], "Field required"
        elif kind == "model_attributes_type":
            msg = "must be a JSON object"
        elif loc:
            loc = loc[1:]  # the discriminated union puts the kind first: ("latency", "params", "delay_s")
        problems.append({"loc": ["body", *loc], "msg": msg, "type": kind})
    return problems


def admin_router(faults: FaultTable, token: str | None) -> APIRouter:
    """The /admin/ routes over `faults`; `token` None disables them (403)."""
    expected = token.encode() if token is not None else None

    async def require_admin(
        request: Request, _token: Annotated[HTTPAuthorizationCredentials | None, Security(_ADMIN_BEARER)]
    ) -> None:
        if expected is None:
            raise HTTPException(
                403, "the admin API is disabled: this wrapper was started without --admin-token-file"
            )
        require_secret(
            request, expected, what="admin token",
            hint=f"{_USE_THE_HEADER} (the token is in the lab directory)",
        )  # fmt: skip

    router = APIRouter(
        prefix=ADMIN_PREFIX,
        dependencies=[Depends(require_admin)],
        responses=error_responses(400, 401, 403),
        tags=["admin"],
    )

    @router.post(
        f"/{_FAULTS}",
        status_code=201,
        response_model=InjectedFault,
        responses=error_responses(422),
        openapi_extra=fault_spec_request_body(),
    )
    async def inject_fault(request: Request) -> dict[str, Any]:
        """Inject a fault (body: kind, duration_s, params); a fault of the same kind is replaced."""
        # The body is parsed here, after the token check, so that nobody without the token learns anything.
        raw = await request.body()
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestValidationError([
                {"loc": ["body", exc.pos], "msg": "JSON decode error", "type": "json_invalid",
                 "ctx": {"error": exc.msg}},
            ]) from exc  # fmt: skip
        except UnicodeDecodeError as exc:
            raise RequestValidationError([
                {"loc": ["body"], "msg": "the body is not UTF-8 text", "type": "json_invalid"},
            ]) from exc  # fmt: skip
        try:
            spec = parse_wrapper_fault(data)
        except ValidationError as exc:
            raise RequestValidationError(_spec_problems(exc)) from exc
        fault, replaced = faults.inject(spec)
        return {**fault.describe(fault.started_mono), "replaced": replaced.id if replaced else None}

    @router.get(f"/{_FAULTS}", response_model=FaultList)
    async def list_faults() -> dict[str, Any]:
        """The faults in force now, oldest first, with their remaining seconds."""
        now = time.monotonic()
        return {"faults": [f.describe(now) for f in faults.active()]}

    @router.delete(f"/{_FAULTS}/{{fault_id}}", response_model=EndedFaults, responses=error_responses(404))
    async def end_fault(fault_id: str) -> dict[str, Any] | JSONResponse:
        """End one active fault now; 404 when no active fault has this id (it may have expired)."""
        fault = faults.end(fault_id, "deleted")
        if fault is None:
            return JSONResponse(
                {"error": f"no active fault with id {fault_id!r}; it may have expired (GET /admin/faults)"},
                status_code=404,
            )
        return {"ended": 1, "ids": [fault.id]}

    @router.delete(f"/{_FAULTS}", response_model=EndedFaults)
    async def end_all_faults() -> dict[str, Any]:
        """End every active fault at once; idempotent (ends 0 when none is active)."""
        ended = faults.end_all("deleted_all")
        logger.info("admin: ended all faults (%d active)", len(ended))
        return {"ended": len(ended), "ids": [f.id for f in ended]}

    return router
