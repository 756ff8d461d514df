"""The HTTP service for RAG applications: recall and read-only SQL, one bearer token per tenant.

``create_app`` builds a FastAPI app (OpenAPI schema at ``/openapi.json``) over
one store. Every route is under ``/v1/tenants/{tenant}`` and needs
``Authorization: Bearer <token>`` where the token is that tenant's: a missing
or unknown token gets 401, another tenant's token 403, a tenant with no data
404 (the OpenAPI schema declares the bearer scheme). SQL runs through
``memtape.query`` with the tenant set, so only one read-only statement runs
and only the tenant's rows are visible; it is interrupted past its timeout or
when the client goes away, and rows stop coming at the cap. Tokens come
from a TOML file (``[tokens]`` table: ``tenant = "token"``) or the
``MEMTAPE_SERVICE_TOKENS`` variable (``tenant=token,tenant=token``). The
service binds 127.0.0.1 unless told otherwise. It writes nothing itself.
"""
from __future__ import annotations

import asyncio
import hmac
import os
import time
import tomllib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Mapping

from fastapi import Depends, FastAPI, HTTPException, Path as PathParam, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, field_validator

from memtape.connectors.lance_store import Store
from memtape.errors import UnknownTenant, UserError
from memtape.recall import DEFAULT_BUDGET, RecallItem

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
TOKENS_ENV = "MEMTAPE_SERVICE_TOKENS"
MAX_SQL_ROWS = 10_000
DEFAULT_SQL_TIMEOUT_S = 10.0
DISCONNECT_POLL_S = 0.1  # how often a running statement checks for its deadline and a departed client
EARLIEST_TIME = datetime(1800, 1, 1, tzinfo=timezone.utc)  # as for event times: earlier is a typing error
MAX_BUDGET = 32_000


class RecallRequest(BaseModel):
    """What to recall: the tenant comes from the path, never from the body."""

    query: str = Field(min_length=1, max_length=4_000)
    budget: int = Field(DEFAULT_BUDGET, ge=1, le=MAX_BUDGET, description="Context tokens (words x 1.3).")
    since: datetime | None = None
    until: datetime | None = None
    source_kind: str | None = Field(None, description="im, email, meeting or health")
    subject: str | None = Field(None, max_length=400, description="Only memories about this person: a name, address or id.")
    max_items: int | None = Field(None, ge=1, description="At most this many items.")
    min_score: float | None = Field(None, ge=0.0, description="Leave out items scoring below this (default: those not standing out from the rest).")
    order: Literal["relevance", "time"] = Field("relevance", description="relevance: best memory first; time: oldest first.")

    @field_validator("since", "until")
    @classmethod
    def _plausible(cls, value: datetime | None) -> datetime | None:
        """A naive time is UTC; one before 1800 is refused (422), as no memory is that old."""
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        if value is not None and value < EARLIEST_TIME:
            raise ValueError("must be 1800-01-01 or later")
        return value


class RecallResponse(BaseModel):
    query: str
    tenant: str
    budget: int
    context: str
    tokens: float
    items: list[RecallItem]  # one cited line or memory of the context (a dataclass; pydantic validates it)
    latency_ms: float
    order: str
    subjects: list[str]  # whom recall was restricted to
    reason: str | None  # why there are no items, when there are none


class SqlRequest(BaseModel):
    query: str = Field(min_length=1, max_length=20_000, description="One read-only statement over the tenant's tables.")


class SqlResponse(BaseModel):
    columns: list[str]
    rows: list[dict[str, Any]]
    truncated: bool


def load_tokens(path: str | None = None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """tenant -> token from the TOML file ``path`` (``[tokens]``), else from ``MEMTAPE_SERVICE_TOKENS``."""
    env = os.environ if env is None else env
    tokens: dict[str, str] = {}
    if path:
        try:
            with Path(path).open("rb") as handle:
                tokens = {str(k): str(v) for k, v in tomllib.load(handle).get("tokens", {}).items()}
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UserError(f"{path}: cannot read the token file ({exc})") from exc
    elif env.get(TOKENS_ENV):
        for pair in env[TOKENS_ENV].split(","):
            tenant, sep, token = pair.strip().partition("=")
            if not sep or not tenant or not token:
                raise UserError(f"{TOKENS_ENV}: expected tenant=token pairs separated by commas")
            tokens[tenant] = token
    if not tokens:
        raise UserError(f"no tenant tokens configured: make one with `memtape serve --new-token TENANT`, "
                        f"then pass --tokens FILE (or set {TOKENS_ENV})")
    if any(len(t) < 8 for t in tokens.values()):
        raise UserError("every tenant token must be at least 8 characters")
    return tokens


def add_token(path: str, tenant: str) -> str:
    """Give ``tenant`` a new random token in the TOML token file ``path`` (made, owner-only, if missing); return it."""
    import json
    import secrets

    file = Path(path)
    tokens = load_tokens(path) if file.exists() else {}
    tokens[tenant] = secrets.token_urlsafe(24)
    lines = ["[tokens]"] + [f"{json.dumps(t)} = {json.dumps(tok)}" for t, tok in tokens.items()]  # JSON strings are TOML strings
    file.touch(mode=0o600)
    file.write_text("\n".join(lines) + "\n")
    return tokens[tenant]


def token_owner(tokens: Mapping[str, str], offered: str) -> str | None:
    """The tenant whose token is ``offered`` (compared in constant time), or None."""
    return next((t for t, tok in tokens.items() if hmac.compare_digest(tok.encode(), offered.encode())), None)


def create_app(store: Store, tokens: Mapping[str, str], sql_timeout_s: float = DEFAULT_SQL_TIMEOUT_S) -> Any:
    """The FastAPI app serving ``store`` to the tenants in ``tokens`` (tenant -> token).

    A SQL statement running past ``sql_timeout_s`` is interrupted (408).
    """
    from memtape.query import fetch, open_query
    from memtape.recall import recall

    app = FastAPI(title="memtape", version="1", description="Recall and read-only SQL over one tenant's memories.")
    tokens = dict(tokens)
    bearer = HTTPBearer(auto_error=False, description="The tenant's token from the service's token file.")

    def tenant_of(credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                  tenant: str = PathParam(..., min_length=1, max_length=200)) -> str:
        if credentials is None or not credentials.credentials:
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        owner = token_owner(tokens, credentials.credentials)
        if owner is None:
            raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
        if owner != tenant:
            raise HTTPException(403, "this token is not the tenant's")
        try:
            store.require_tenant(tenant)
        except UnknownTenant as exc:  # the message names the other tenants: not for this caller
            raise HTTPException(404, f"tenant {tenant!r} has no data in this store") from exc
        return tenant

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/tenants/{tenant}/recall", response_model=RecallResponse)
    def recall_route(body: RecallRequest, tenant: str = Depends(tenant_of)) -> dict[str, Any]:
        try:
            result = recall(body.query, tenant, body.budget, body.since, body.until, body.source_kind, store=store,
                            subject=body.subject, max_items=body.max_items, min_score=body.min_score, order=body.order)
        except UserError as exc:
            raise HTTPException(400, str(exc)) from exc
        return result.to_dict()

    @app.post("/v1/tenants/{tenant}/sql", response_model=SqlResponse)
    async def sql_route(body: SqlRequest, request: Request, tenant: str = Depends(tenant_of)) -> dict[str, Any]:
        try:
            con = await asyncio.to_thread(open_query, body.query, store, tenant)
        except UserError as exc:
            raise HTTPException(400, str(exc)) from exc
        try:
            running = asyncio.ensure_future(asyncio.to_thread(fetch, con, body.query, MAX_SQL_ROWS))
            deadline = time.monotonic() + sql_timeout_s
            while not running.done():
                await asyncio.wait({running}, timeout=DISCONNECT_POLL_S)
                if running.done():
                    break
                gone = await request.is_disconnected()
                if gone or time.monotonic() > deadline:
                    con.interrupt()
                    await asyncio.wait({running})
                    if gone:
                        raise HTTPException(499, "client closed the request; the statement was interrupted")
                    raise HTTPException(408, f"statement ran past the {sql_timeout_s:g} s timeout and was interrupted")
            try:
                result = running.result()
            except UserError as exc:
                raise HTTPException(400, str(exc)) from exc
        finally:
            con.close()
        table = result.table
        return {"columns": table.column_names, "rows": _jsonable(table.to_pylist()), "truncated": result.truncated}

    return app


def _jsonable(rows: list[dict]) -> list[dict]:
    """Bytes and other non-JSON cells as text, so any table can be returned."""
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(rows, custom_encoder={bytes: lambda b: b.hex()})


def serve(store: Store, tokens: Mapping[str, str], host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          sql_timeout_s: float = DEFAULT_SQL_TIMEOUT_S) -> None:
    """Run the service until interrupted."""
    import uvicorn

    uvicorn.run(create_app(store, tokens, sql_timeout_s), host=host, port=port, log_level="warning")
