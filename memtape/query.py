"""SQL over the memory tables with DuckDB, reading Lance datasets as Arrow scans.

Every table is registered as a DuckDB view over its Lance dataset, so
projections and simple filters push down into Lance; DuckDB's own ``lance``
extension is not used. With ``read_only`` only SELECT-like statements run.
This module never writes to the store.
"""
from __future__ import annotations

import re
from typing import Any

import duckdb
import pyarrow as pa

from memtape.connectors.lance_store import Store
from memtape.errors import UserError
from memtape.schemas import TABLES

_READ_STATEMENTS = {"SELECT", "EXPLAIN"}


def connect(store: Store, read_only: bool = False, tenant: str | None = None, query: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the memtape tables registered as views.

    Without a tenant every table is a view over its Lance dataset (pushdown
    intact). With a tenant, only the tables ``query`` names are registered,
    each holding that tenant's rows alone, so no statement can see another
    tenant. Read-only connections also lose file and network access, so a
    SELECT cannot reach ``read_csv('/etc/...')`` or any path outside the tables.
    """
    con = duckdb.connect()
    if tenant is None:
        for name in TABLES:
            con.register(name, store.dataset(name))
    else:
        for name in _named_tables(query):
            con.register(name, store.read(name, where=f"tenant = '{tenant.replace(chr(39), chr(39) * 2)}'"))
    if read_only:
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    return con


def _named_tables(query: str | None) -> list[str]:
    """Tables whose name appears as a word in ``query`` (all of them when no query is given).

    A table can only be read if its name is written in the statement, so this
    never misses one; a name inside a string literal merely costs a scan.
    """
    if query is None:
        return list(TABLES)
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", query)}
    return [name for name in TABLES if name in words]


def check_read_only(query: str) -> None:
    """Reject any statement that is not a read (writes, COPY, ATTACH, PRAGMA, SET ...)."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise UserError(f"SQL does not parse: {exc}") from exc
    for stmt in statements:
        if stmt.type.name not in _READ_STATEMENTS:
            raise UserError(f"only read queries are allowed, got {stmt.type.name}")


def sql(query: str, store: Store | None = None, read_only: bool = False, tenant: str | None = None) -> pa.Table:
    """Run ``query`` over the memory tables and return the result as Arrow.

    ``tenant`` scopes every table to that tenant's rows (the service always sets it).
    """
    if read_only:
        check_read_only(query)
    store = store or Store.open()
    con = connect(store, read_only, tenant, query)
    try:
        relation = con.sql(query)
        return relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.Error as exc:
        raise UserError(f"SQL failed: {str(exc).splitlines()[0]}") from exc
    finally:
        con.close()


def sql_polars(query: str, store: Store | None = None, read_only: bool = False, tenant: str | None = None) -> Any:
    """The same as ``sql`` but as a polars DataFrame."""
    import polars as pl

    return pl.from_arrow(sql(query, store, read_only, tenant))
