"""SQL over the memory tables with DuckDB, reading Lance datasets as Arrow scans; read-only for every caller.

``memtape sql``, the service and ``memtape.query.sql`` all go through
``open_query``: the text must be one SELECT (or a plain EXPLAIN), and it runs
on an in-memory DuckDB whose tables are views over Lance scans registered
first, after which DuckDB's own switches shut the rest: external access off
(no file, network or extension function), extension loading off, and the
configuration locked so no statement can switch them back. With a tenant,
every table holds that tenant's rows alone. DuckDB's ``lance`` extension is
not used. This module never writes to the store.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import duckdb
import pyarrow as pa

from memtape.connectors.lance_store import Store, column_is
from memtape.errors import UserError
from memtape.schemas import TABLES

_READ_STATEMENTS = {"SELECT", "EXPLAIN"}
_QUERY_STARTS = {"SELECT", "WITH", "FROM", "VALUES", "TABLE"}  # what may follow a plain EXPLAIN
_LOCKDOWN = ("SET enable_external_access = false", "SET autoinstall_known_extensions = false",
             "SET autoload_known_extensions = false", "SET lock_configuration = true")
FETCH_BATCH_ROWS = 2048  # rows per streamed batch when a row cap applies


@dataclasses.dataclass
class Result:
    table: pa.Table
    truncated: bool  # more rows existed than the cap let through


def check_statement(query: str) -> None:
    """Refuse anything but one SELECT or plain EXPLAIN (``EXPLAIN ANALYZE`` or ``EXPLAIN (ANALYZE)`` runs it)."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise UserError(f"SQL does not parse: {str(exc).splitlines()[0]}") from exc
    for statement in statements:
        if statement.type.name not in _READ_STATEMENTS:
            raise UserError(f"only read queries are allowed, got {statement.type.name}")
    if len(statements) != 1:
        raise UserError(f"one statement at a time, got {len(statements)}")
    if statements[0].type.name == "EXPLAIN" and not set(_tokens(query)[1:2]) & _QUERY_STARTS:
        raise UserError("only a plain EXPLAIN of a query is allowed (EXPLAIN ANALYZE and its options run the statement)")


def _tokens(query: str) -> list[str]:
    """The statement's tokens in order as upper-case text, comments skipped (DuckDB's own tokenizer)."""
    tokens = duckdb.tokenize(query)
    out = []
    for i, (start, kind) in enumerate(tokens):
        if kind.name.upper() != "COMMENT":
            end = tokens[i + 1][0] if i + 1 < len(tokens) else len(query)
            out.append(query[start:end].strip().upper())
    return out


def open_query(query: str, store: Store | None = None, tenant: str | None = None) -> duckdb.DuckDBPyConnection:
    """A locked-down DuckDB connection ready to run ``query`` (checked first) over the memory tables.

    Without a tenant every table is a view over its Lance dataset (pushdown
    intact). With a tenant, only the tables ``query`` names are registered,
    each holding that tenant's rows alone, so no statement can see another
    tenant's.
    """
    check_statement(query)
    store = store or Store.open()
    con = duckdb.connect()
    try:
        if tenant is None:
            for name in TABLES:
                con.register(name, store.dataset(name))
        else:
            for name in _named_tables(query):
                con.register(name, store.read(name, where=column_is("tenant", tenant)))
        for setting in _LOCKDOWN:
            con.execute(setting)
    except BaseException:
        con.close()
        raise
    return con


def _named_tables(query: str) -> list[str]:
    """Tables whose name appears as a word in ``query``.

    A table can only be read if its name is written in the statement, so this
    never misses one; a name inside a string literal merely costs a scan.
    """
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", query)}
    return [name for name in TABLES if name in words]


def fetch(con: duckdb.DuckDBPyConnection, query: str, max_rows: int | None = None) -> Result:
    """Run ``query`` on ``con``; with ``max_rows`` rows stream in batches and stop past the cap.

    ``con.interrupt()`` from another thread stops it with a ``UserError``.
    """
    try:
        relation = con.sql(query)
        if relation is None:
            return Result(pa.table({}), False)
        if max_rows is None:
            return Result(relation.to_arrow_table(), False)
        reader = relation.to_arrow_reader(FETCH_BATCH_ROWS)
        batches, rows = [], 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if rows > max_rows:
                break
        table = pa.Table.from_batches(batches, reader.schema)
        return Result(table.slice(0, max_rows), rows > max_rows)
    except duckdb.Error as exc:
        raise UserError(f"SQL failed: {str(exc).splitlines()[0]}") from exc


def sql(query: str, store: Store | None = None, tenant: str | None = None) -> pa.Table:
    """Run one read-only ``query`` over the memory tables and return the result as Arrow.

    ``tenant`` scopes every table to that tenant's rows (the service always sets it).
    """
    con = open_query(query, store, tenant)
    try:
        return fetch(con, query).table
    finally:
        con.close()


def sql_polars(query: str, store: Store | None = None, tenant: str | None = None) -> Any:
    """The same as ``sql`` but as a polars DataFrame."""
    import polars as pl

    return pl.from_arrow(sql(query, store, tenant))
