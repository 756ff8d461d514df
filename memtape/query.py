"""SQL over the memory tables with DuckDB, reading Lance datasets as Arrow scans.

Every table is registered as a DuckDB view over its Lance dataset, so
projections and simple filters push down into Lance; DuckDB's own ``lance``
extension is not used. With ``read_only`` only SELECT-like statements run.
This module never writes to the store.
"""
from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

from memtape.connectors.lance_store import Store
from memtape.errors import UserError
from memtape.schemas import TABLES

_READ_STATEMENTS = {"SELECT", "EXPLAIN"}


def connect(store: Store, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with every memtape table registered as a view.

    Read-only connections also lose file and network access, so a SELECT
    cannot reach ``read_csv('/etc/...')`` or any path outside the tables.
    """
    con = duckdb.connect()
    for name in TABLES:
        con.register(name, store.dataset(name))
    if read_only:
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    return con


def check_read_only(query: str) -> None:
    """Reject any statement that is not a read (writes, COPY, ATTACH, PRAGMA, SET ...)."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise UserError(f"SQL does not parse: {exc}") from exc
    for stmt in statements:
        if stmt.type.name not in _READ_STATEMENTS:
            raise UserError(f"only read queries are allowed, got {stmt.type.name}")


def sql(query: str, store: Store | None = None, read_only: bool = False) -> pa.Table:
    """Run ``query`` over the memory tables and return the result as Arrow."""
    if read_only:
        check_read_only(query)
    store = store or Store.open()
    con = connect(store, read_only)
    try:
        relation = con.sql(query)
        return relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.Error as exc:
        raise UserError(f"SQL failed: {str(exc).splitlines()[0]}") from exc
    finally:
        con.close()


def sql_polars(query: str, store: Store | None = None, read_only: bool = False) -> Any:
    """The same as ``sql`` but as a polars DataFrame."""
    import polars as pl

    return pl.from_arrow(sql(query, store, read_only))
