"""SQL is read-only at every entry point (CLI, HTTP, ``memtape.query.sql``), and the service bounds each statement.

Real DuckDB over real Lance tables on a temporary store; the service runs
through FastAPI's test client, and over real HTTP for the client-disconnect case.
"""
from __future__ import annotations

import resource
import socket
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from memtape.cli import cli
from memtape.connectors.lance_store import Store
from memtape.errors import UserError
from memtape.query import fetch, open_query, sql
from memtape.schemas.records import RawEvent
from memtape.service import DEFAULT_HOST, create_app

TOKENS = {"a": "token-of-tenant-a", "b": "token-of-tenant-b"}
ESCAPES = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_blob('{home}/raw_events.lance/data/*.lance')",
    "SELECT * FROM glob('/etc/*')",
    "COPY (SELECT 'x') TO '{out}'",
    "ATTACH '{out}' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "PRAGMA enable_profiling",
    "EXPLAIN ANALYZE SELECT count(*) FROM raw_events",
    "EXPLAIN /* a comment */ ANALYZE SELECT 1",
    "EXPLAIN (FORMAT json, ANALYZE) SELECT 1",
    "SELECT 1; SELECT 2",
    "CREATE TABLE t AS SELECT 1",
]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(str(tmp_path / "home"))
    store.upsert("raw_events", [RawEvent(t, "im", "jsonl", f"{t}{i}", f"{t} note {i}", None).to_row()
                                for i in range(3) for t in ("a", "b")])
    return store


def _auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[tenant]}"}


@pytest.mark.parametrize("template", ESCAPES)
@pytest.mark.parametrize("tenant", [None, "a"])
def test_python_sql_refuses_every_write_file_and_setting_statement(store, tmp_path, template, tenant):
    out = tmp_path / "out.csv"
    with pytest.raises(UserError):
        sql(template.format(home=store.home, out=out), store, tenant=tenant)
    assert not out.exists()


@pytest.mark.parametrize("tenant", [[], ["--tenant", "a"]])
def test_cli_sql_cannot_read_files_or_write_them(store, tmp_path, tenant):
    out = tmp_path / "out.csv"
    for query in ["SELECT * FROM read_csv('/etc/passwd')", f"COPY (SELECT 'x') TO '{out}'",
                  f"SELECT * FROM read_blob('{store.home}/raw_events.lance/data/*.lance')"]:
        result = CliRunner().invoke(cli, ["sql", query, "--home", str(store.home), *tenant])
        assert result.exit_code != 0, result.output
        assert "root:" not in result.output and "note" not in result.output
    assert not out.exists()


def test_the_tables_still_read_with_external_access_off(store):
    assert sql("SELECT count(*) AS n FROM raw_events", store).to_pylist() == [{"n": 6}]
    assert sql("SELECT count(*) AS n FROM raw_events", store, tenant="b").to_pylist() == [{"n": 3}]
    assert "raw_events" not in str(sql("EXPLAIN SELECT 1", store).to_pylist()).lower()


def test_rows_are_capped_while_fetching_not_after(store):
    con = open_query("SELECT range FROM range(1000000000000)", store, "a")  # 8 TB if it were materialised
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        result = fetch(con, "SELECT range FROM range(1000000000000)", max_rows=10_000)
    finally:
        con.close()
    assert result.table.num_rows == 10_000 and result.truncated
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_service_interrupts_a_statement_past_its_timeout(store):
    client = TestClient(create_app(store, TOKENS, sql_timeout_s=0.5))
    started = time.monotonic()
    r = client.post("/v1/tenants/a/sql", json={"query": "SELECT count(*) FROM range(100000000000000)"}, headers=_auth("a"))
    assert r.status_code == 408 and "timeout" in r.json()["detail"]
    assert time.monotonic() - started < 30
    r = client.post("/v1/tenants/a/sql", json={"query": "SELECT range FROM range(150000000)"}, headers=_auth("a"))
    assert r.status_code == 200 and len(r.json()["rows"]) == 10_000 and r.json()["truncated"]


@pytest.mark.parametrize("query", ["EXPLAIN ANALYZE SELECT count(*) FROM raw_events", "SELECT 1; SELECT 2",
                                   "SELECT * FROM read_csv('/etc/passwd')"])
def test_service_refuses_what_the_guard_refuses_with_a_400(store, query):
    client = TestClient(create_app(store, TOKENS))
    r = client.post("/v1/tenants/a/sql", json={"query": query}, headers=_auth("a"))
    assert r.status_code == 400 and "\n" not in r.json()["detail"]


def test_service_answers_a_since_of_year_one_with_a_client_error(store):
    client = TestClient(create_app(store, TOKENS), raise_server_exceptions=False)
    r = client.post("/v1/tenants/a/recall", json={"query": "note", "since": "0001-01-01T00:00:00"}, headers=_auth("a"))
    assert r.status_code == 422 and "1800" in r.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_service_interrupts_a_statement_when_the_client_goes_away(store):
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store, TOKENS, sql_timeout_s=600), host=DEFAULT_HOST, port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        body = b'{"query": "SELECT count(*) FROM range(100000000000000)"}'
        request = (f"POST /v1/tenants/a/sql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKENS['a']}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        with socket.create_connection((DEFAULT_HOST, port)) as client:
            client.sendall(request)
            busy, give_up = time.process_time(), time.monotonic() + 30
            while time.process_time() - busy < 0.5 and time.monotonic() < give_up:  # the statement is burning CPU
                time.sleep(0.05)
        time.sleep(1.0)  # the service polls for the departed client every 0.1 s
        cpu, wall = time.process_time(), time.monotonic()
        time.sleep(2.0)
        assert (time.process_time() - cpu) / (time.monotonic() - wall) < 0.25, "the statement still runs"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
