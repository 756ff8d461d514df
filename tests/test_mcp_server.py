"""``memtape mcp``: an agent lists the tools and gets a cited answer, through the MCP SDK's own client over stdio."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from memtape.connectors.lance_store import Store, column_is
from test_recall_api import CHAT, make_memories

MEMTAPE = str(Path(sys.executable).with_name("memtape"))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> str:
    store = Store(str(tmp_path_factory.mktemp("mcp") / "store"))
    make_memories(store, "t1", CHAT)
    make_memories(store, "t2", [{"text": "Tenant two keeps a parrot called Kiwi.", "who": "Zed", "source_id": "kiwi"}])
    return store.home


def _env(home: str) -> dict[str, str]:
    return {"MEMTAPE_HOME": home, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": os.environ["PATH"],
            "MEMTAPE_FORGETTING_ENABLED": "false"}


async def _session_calls(home: str, calls: list[tuple[str, dict]]) -> tuple[list, list]:
    params = StdioServerParameters(command=MEMTAPE, args=["mcp", "--tenant", "t1"], env=_env(home))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = (await session.list_tools()).tools
        return tools, [await session.call_tool(name, arguments) for name, arguments in calls]


def test_an_mcp_client_lists_the_tools_and_gets_a_cited_answer(home: str) -> None:
    raw = Store(home).read("raw_events", where=column_is("tenant", "t1")).to_pylist()
    biscuit_ids = {r["event_id"] for r in raw if "Biscuit" in r["text"]}
    tools, (recalled, counted, refused) = anyio.run(_session_calls, home, [
        ("recall", {"query": "What is the name of Ana's cat?", "budget": 80}),
        ("sql", {"query": "SELECT tenant, count(*) AS n FROM raw_events GROUP BY tenant"}),
        ("sql", {"query": "DELETE FROM memories"}),
    ])

    by_name = {t.name: t for t in tools}
    assert {"recall", "sql"} <= set(by_name)
    assert {"query", "budget", "since", "until", "source_kind"} <= set(by_name["recall"].input_schema["properties"])
    answer = recalled.structured_content
    assert not recalled.is_error and "Biscuit" in answer["context"] and "Kiwi" not in answer["context"]
    cited = {e for item in answer["items"] for e in item["raw_event_ids"]}
    assert cited & biscuit_ids and cited <= {r["event_id"] for r in raw}
    assert all(item["sources"] == ["jsonl"] and item["event_time"] for item in answer["items"])
    assert counted.structured_content["rows"] == [{"tenant": "t1", "n": len(CHAT)}]
    assert refused.is_error and "only read queries" in refused.content[0].text


def test_mcp_on_an_unknown_tenant_exits_naming_the_known_ones(home: str, monkeypatch, capsys) -> None:
    from test_cli_feedback import run_main

    code, _, err = run_main(["mcp", "--tenant", "t3", "--home", home], monkeypatch, capsys)
    assert code == 1
    assert err.strip() == f"error: unknown tenant 't3' in {home} (known tenants: t1, t2)"


def test_mcp_over_http_answers_only_the_tenants_bearer_token(home: str) -> None:
    from mcp_types import LATEST_PROTOCOL_VERSION
    from starlette.testclient import TestClient

    from memtape.mcp_server import build_server, http_app

    app = http_app(build_server(Store(home, create=False), "t1"), "t1", {"t1": "token-of-tenant-one", "t2": "token-of-tenant-two"})
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": LATEST_PROTOCOL_VERSION, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    with TestClient(app, base_url="http://127.0.0.1:8766") as client:
        assert client.post("/mcp", json=hello, headers=accept).status_code == 401
        assert client.post("/mcp", json=hello, headers={**accept, "Authorization": "Bearer token-of-tenant-two"}).status_code == 401
        answer = client.post("/mcp", json=hello, headers={**accept, "Authorization": "Bearer token-of-tenant-one"})
    assert answer.status_code == 200 and '"name":"memtape"' in answer.text.replace(" ", "")
