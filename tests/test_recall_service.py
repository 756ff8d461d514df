"""``memtape serve`` over real HTTP: recall and read-only SQL per tenant, tokens enforced, loopback by default."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from memtape.connectors.lance_store import Store
from memtape.errors import UserError
from memtape.service import DEFAULT_HOST, create_app, load_tokens
from test_recall_api import CHAT, make_memories

TOKENS = {"t1": "token-of-tenant-one", "t2": "token-of-tenant-two"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory):
    import uvicorn

    store = Store(str(tmp_path_factory.mktemp("serve") / "store"))
    make_memories(store, "t1", CHAT)
    make_memories(store, "t2", [{"text": "Tenant two keeps a parrot called Kiwi.", "who": "Zed"}])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store, TOKENS), host=DEFAULT_HOST, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://{DEFAULT_HOST}:{port}"
    from memtape.recall import wait_for_reinforcement

    wait_for_reinforcement()
    server.should_exit = True
    thread.join(timeout=10)


def _auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[tenant]}"}


def test_recall_over_http_returns_the_tenants_context_with_provenance(base_url: str) -> None:
    r = httpx.post(f"{base_url}/v1/tenants/t1/recall", json={"query": "Ana's cat Biscuit", "budget": 60}, headers=_auth("t1"), timeout=60)
    assert r.status_code == 200
    body = r.json()
    assert "Biscuit" in body["context"] and body["tokens"] <= 60
    assert all(item["sources"] == ["jsonl"] and len(item["raw_event_ids"]) == 1 for item in body["items"])
    assert "Kiwi" not in body["context"]


def test_sql_over_http_sees_only_the_tenants_rows(base_url: str) -> None:
    r = httpx.post(f"{base_url}/v1/tenants/t2/sql", json={"query": "SELECT tenant, count(*) AS n FROM memories GROUP BY tenant"},
                   headers=_auth("t2"), timeout=60)
    assert r.status_code == 200
    assert r.json()["rows"] == [{"tenant": "t2", "n": 1}]


@pytest.mark.parametrize("statement", [
    "DELETE FROM memories",
    "UPDATE memories SET archived = true",
    "CREATE TABLE stolen AS SELECT * FROM memories",
    "COPY memories TO '/tmp/out.csv'",
    "SELECT 1; DROP TABLE memories",
])
def test_sql_that_writes_is_rejected(base_url: str, statement: str) -> None:
    r = httpx.post(f"{base_url}/v1/tenants/t1/sql", json={"query": statement}, headers=_auth("t1"), timeout=60)
    assert r.status_code == 400 and "only read queries" in r.json()["detail"]


def test_a_token_that_is_not_the_tenants_is_refused(base_url: str) -> None:
    body = {"query": "SELECT * FROM memories"}
    assert httpx.post(f"{base_url}/v1/tenants/t1/sql", json=body, headers=_auth("t2")).status_code == 403
    assert httpx.post(f"{base_url}/v1/tenants/t1/sql", json=body).status_code == 401
    assert httpx.post(f"{base_url}/v1/tenants/t1/sql", json=body, headers={"Authorization": "Bearer nope-nope-nope"}).status_code == 401
    assert httpx.post(f"{base_url}/v1/tenants/t3/recall", json={"query": "x"}, headers=_auth("t1")).status_code == 403


def test_openapi_schema_lists_recall_and_sql(base_url: str) -> None:
    paths = httpx.get(f"{base_url}/openapi.json").json()["paths"]
    assert {"/v1/tenants/{tenant}/recall", "/v1/tenants/{tenant}/sql"} <= set(paths)


def test_serve_binds_loopback_by_default_and_needs_tokens(tmp_path: Path) -> None:
    from memtape.commands.serve import command

    assert DEFAULT_HOST == "127.0.0.1"
    assert "127.0.0.1" in CliRunner().invoke(command, ["--help"]).output
    with pytest.raises(UserError):
        load_tokens(None, env={})
    file = tmp_path / "tokens.toml"
    file.write_text('[tokens]\nalice = "alice-secret-1"\n')
    assert load_tokens(str(file)) == {"alice": "alice-secret-1"}
    assert load_tokens(None, env={"MEMTAPE_SERVICE_TOKENS": "a=aaaaaaaa1,b=bbbbbbbb2"}) == {"a": "aaaaaaaa1", "b": "bbbbbbbb2"}
