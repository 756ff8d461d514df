"""The Model Context Protocol server: one tenant's recall and read-only SQL as tools an agent can call.

``build_server`` makes an ``MCPServer`` of the official ``mcp`` SDK with two
tools: ``recall`` (the packed context for a query, each item citing its raw
event ids, sources and event time) and ``sql`` (one read-only statement over
the tenant's rows). ``memtape mcp`` runs it over stdio for a local agent, or
over streamable HTTP behind the same bearer tokens as ``memtape serve``. The
tenant is fixed when the server starts, never chosen by the agent. It writes
nothing to the store (recall may reinforce memory strength, as everywhere).
"""
from __future__ import annotations

import inspect
import json
from datetime import datetime
from typing import Any, Literal, Mapping

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from memtape.connectors.lance_store import Store
from memtape.errors import UserError

MCP_PATH = "/mcp"
MAX_SQL_ROWS = 1_000  # an agent's context is small: a bigger answer is cut and marked truncated
SourceKind = Literal["im", "email", "meeting", "health"]


def build_server(store: Store, tenant: str) -> MCPServer:
    """An MCP server answering for ``tenant`` from ``store``; fails at once if the tenant holds no data."""
    from memtape.recall import DEFAULT_BUDGET

    store.require_tenant(tenant)
    server = MCPServer("memtape", instructions=(
        f"Long-term memory of tenant {tenant!r}: chats, mail, meetings and health records. Call recall for context "
        "on a question and cite each item's raw_event_ids; call sql for counts and listings (read-only DuckDB over "
        "raw_events, memories, episodes, triples, entities, dead_letters)."))

    @server.tool(description="Verbatim lines of memory for a query, at most a token budget (fewer when fewer are relevant), "
                             "best first. A query naming one person (or subject: a name, email address or Patient/ID) is "
                             "answered from the memories about them. Each item carries its provenance: raw_event_ids, "
                             "sources, source_ids, event_time, subjects.")
    async def recall(query: str, budget: int = DEFAULT_BUDGET, since: datetime | None = None,
                     until: datetime | None = None, source_kind: SourceKind | None = None, subject: str | None = None,
                     max_items: int | None = None, min_score: float | None = None,
                     order: Literal["relevance", "time"] = "relevance") -> dict[str, Any]:
        # Every parameter after query and budget is passed to memtape.recall by name:
        # a new recall option (subject, max_items ...) is one more parameter above and nothing else.
        options = {name: value for name, value in locals().items() if name in recall_options}
        return await _answer(lambda: _recall(store, tenant, query, budget, options))

    recall_options = set(inspect.signature(recall).parameters) - {"query", "budget"}

    @server.tool(description="Run one read-only SQL statement (DuckDB) over this tenant's tables and return the rows. "
                             "raw_events holds what was read, with source_uri and source_id; memories.raw_event_ids "
                             "cite raw_events.event_id.")
    async def sql(query: str, max_rows: int = 200) -> dict[str, Any]:
        return await _answer(lambda: _sql(store, tenant, query, min(max(max_rows, 1), MAX_SQL_ROWS)))

    return server


async def _answer(work: Any) -> dict[str, Any]:
    """Run blocking store work off the event loop; a user error becomes the tool's error message."""
    try:
        return await anyio.to_thread.run_sync(work)
    except UserError as exc:
        raise ToolError(str(exc)) from exc


def _recall(store: Store, tenant: str, query: str, budget: int, options: dict[str, Any]) -> dict[str, Any]:
    from memtape.recall import recall

    store.require_tenant(tenant)
    return recall(query, tenant, budget, store=store, **options).to_dict()


def _sql(store: Store, tenant: str, query: str, max_rows: int) -> dict[str, Any]:
    from memtape.query import sql

    store.require_tenant(tenant)
    table = sql(query, store, tenant=tenant)
    rows = json.loads(json.dumps(table.slice(0, max_rows).to_pylist(), default=str))  # timestamps, bytes as text
    return {"columns": table.column_names, "rows": rows, "truncated": table.num_rows > max_rows}


def http_app(server: MCPServer, tenant: str, tokens: Mapping[str, str]) -> Any:
    """The streamable HTTP app at ``/mcp``, refusing every request without ``tenant``'s bearer token."""
    from starlette.responses import JSONResponse

    from memtape.service import token_owner

    inner = server.streamable_http_app(streamable_http_path=MCP_PATH)
    if tenant not in tokens:
        raise UserError(f"no token for tenant {tenant!r} in the token file (make one: memtape serve --new-token {tenant})")

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            kind, _, offered = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            if kind.lower() != "bearer" or token_owner(tokens, offered) != tenant:
                response = JSONResponse({"detail": "a bearer token of this server's tenant is needed"}, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await inner(scope, receive, send)

    return app
