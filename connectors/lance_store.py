"""The Lance memory store: every table of ``memtape.schemas`` as a Lance dataset through lancedb.

It is the only module that writes tables. Writes are keyed ``merge_insert``
on each table's stable id, so landing the same rows twice changes nothing.
What a stored key does with a new row is the table's ``disposition`` in
``memtape.schemas``: raw and dead-letter rows are insert-only (raw data stays
as first read); derived rows are replaced, or folded, when recomputed. Lance does not serialise two
writers inserting the same new keys, so callers keep one writer per table.
Readers open a store with ``create=False``: a mistyped home is an error,
never a new empty store. Rows are read, counted and deleted by pyarrow
expressions built from values (``column_is``, ``any_of``), never by SQL text:
a tenant named "O'Brien" or "a timestamp b" is a value like any other. Where
an engine takes only SQL text (lancedb's searches, a query printed for a
person to run), the text is built here, each value through ``sql_literal``,
the one quoting function.
"""
from __future__ import annotations

import dataclasses
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import lancedb
import pyarrow as pa
import pyarrow.compute as pc

from memtape.errors import UnknownTenant, UserError
from memtape.schemas import TABLES, Disposition, conform, disposition, key_of

VERSION_TTL_S = 0.05


@dataclasses.dataclass(frozen=True)
class Merged:
    """What one keyed write did: rows offered, and how many of them were new keys (the rest were already stored)."""

    offered: int
    inserted: int


@dataclasses.dataclass(frozen=True)
class TableInfo:
    name: str
    rows: int
    bytes: int | None
    version: int


def _local_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _is_uri(home: str) -> bool:
    return "://" in home


class Store:
    """A connection to one memtape home (a folder or an object-store URI)."""

    def __init__(self, home: str, storage_options: dict[str, str] | None = None, create: bool = True) -> None:
        self.home = home if _is_uri(home) else os.path.abspath(home)
        self.storage_options = dict(storage_options or {})
        if not create and not _is_uri(home) and not any(Path(self.home).glob("*.lance")):
            raise UserError(_NO_STORE.format(home=self.home))  # checked before connecting: lancedb makes the folder
        try:
            # Check for newer versions on every read: other processes (workers, the stream job) write too.
            self.db = lancedb.connect(self.home, storage_options=self.storage_options or None,
                                      read_consistency_interval=timedelta(0))
        except Exception as exc:  # lancedb raises many types for a bad URI or credentials
            raise UserError(f"{home}: cannot open the store ({exc})") from exc
        self._tables: dict[str, Any] = {}
        self._versions: dict[str, tuple[float, int]] = {}  # table -> (monotonic time checked, version)
        self._tenants: tuple[int, list[str]] | None = None  # (raw_events version, tenants) of the last look
        if not create and not self.stored_tables():
            raise UserError(_NO_STORE.format(home=self.home))

    @classmethod
    def open(cls, home: str | None = None, create: bool = True) -> "Store":
        """The store named by ``home``, else by the configuration (``MEMTAPE_HOME``).

        ``create=False`` (every read command) refuses a home holding no memtape table.
        """
        from memtape.config import load_config

        cfg = load_config()
        return cls(home or cfg.store.home, cfg.store.storage_options, create)

    def stored_tables(self) -> list[str]:
        """The memtape tables that exist at this home (without creating any)."""
        return [name for name in self.db.list_tables().tables if name in TABLES]

    def tenants(self) -> list[str]:
        """Every tenant with raw events, sorted; looked up again only when raw_events has a new version."""
        if "raw_events" not in self.stored_tables():
            return []
        version = self.table("raw_events").version
        if self._tenants is None or self._tenants[0] != version:
            column = self.dataset("raw_events").to_table(columns=["tenant"]).column("tenant")
            self._tenants = (version, sorted(column.unique().to_pylist()))
        return self._tenants[1]

    def require_tenant(self, tenant: str) -> None:
        """Fail in one line naming the known tenants when ``tenant`` has no data here (an empty answer would hide it)."""
        known = self.tenants()
        if tenant not in known:
            held = f"known tenants: {', '.join(known)}" if known else "the store holds no data yet"
            raise UnknownTenant(f"unknown tenant {tenant!r} in {self.home} ({held})", tenant)

    def table(self, name: str) -> Any:
        """The lancedb table ``name``, created empty with its schema on first use.

        A table written before a column was added to its schema gets that
        column, empty for the rows it has, so an existing store keeps working.
        """
        if name not in TABLES:
            raise UserError(f"unknown table {name!r} (known: {', '.join(TABLES)})")
        if name not in self._tables:
            table = self.db.create_table(name, schema=TABLES[name], exist_ok=True)
            stored = set(table.schema.names)
            missing = [f for f in TABLES[name] if f.name not in stored]
            if missing:
                table.add_columns(pa.schema(missing))
            self._tables[name] = table
        return self._tables[name]

    def version(self, name: str) -> int:
        """The table's latest version, checked at most once per ``VERSION_TTL_S`` (each check reads the store).

        One recall asks several times; a version a few milliseconds old is as
        good as a read that started a few milliseconds earlier.
        """
        now = time.monotonic()
        hit = self._versions.get(name)
        if hit is None or now - hit[0] > VERSION_TTL_S:
            hit = self._versions[name] = (now, self.table(name).version)
        return hit[1]

    def dataset(self, name: str) -> Any:
        """The table as a Lance dataset (a pyarrow Dataset: DuckDB and Polars scan it with pushdown)."""
        return self.table(name).to_lance()

    def upsert(self, name: str, rows: pa.Table | list[dict]) -> int:
        """Land rows keyed by the table's stable id; return how many rows were offered."""
        return self.merge(name, rows).offered

    def merge(self, name: str, rows: pa.Table | list[dict]) -> Merged:
        """Land rows keyed by the table's stable id; say how many were offered and how many keys were new."""
        data = rows if isinstance(rows, pa.Table) else conform(name, rows)
        if data.num_rows == 0:
            return Merged(0, 0)
        data = last_per_key(data.cast(TABLES[name]), key_of(name))
        builder = self.table(name).merge_insert(key_of(name)).when_not_matched_insert_all()
        if disposition(name) is not Disposition.INSERT:
            builder = builder.when_matched_update_all()
        try:
            result = builder.execute(data)
            self._versions.pop(name, None)  # this process reads its own writes at once
        except WRITE_ERRORS as exc:
            raise cannot_write(self.home, name, exc) from exc
        return Merged(data.num_rows, result.num_inserted_rows)

    def fold_with_stored(self, name: str, rows: list[dict], merge: Callable[[dict, dict], dict]) -> list[dict]:
        """Fold rows sharing a key with each other and with the stored row of that key."""
        key = key_of(name)
        folded: dict[str, dict] = {}
        for row in rows:
            folded[row[key]] = merge(folded[row[key]], row) if row[key] in folded else row
        if folded:
            for stored in self.read(name, where=any_of(key, list(folded))).to_pylist():
                folded[stored[key]] = merge(stored, folded[stored[key]])
        return list(folded.values())

    def read(self, name: str, where: pc.Expression | None = None, columns: list[str] | None = None) -> pa.Table:
        """Rows of ``name`` matching the expression ``where`` (every row when None), as Arrow."""
        return self.dataset(name).to_table(filter=_checked(where), columns=columns)

    def delete(self, name: str, where: pc.Expression) -> int:
        """Delete the rows matching ``where``; return how many there were (nothing is written when none match)."""
        dataset = self.dataset(name)
        n = dataset.count_rows(filter=_checked(where))
        if n:
            dataset.delete(where)
            self._versions.pop(name, None)
        return n

    def count(self, name: str, where: pc.Expression | None = None) -> int:
        """Rows of ``name`` matching ``where`` (every row when None)."""
        return self.dataset(name).count_rows(filter=_checked(where))

    def info(self) -> list[TableInfo]:
        """Row count, bytes on disk (local stores) and Lance version of every table."""
        out = []
        for name in TABLES:
            tbl = self.table(name)
            size = None if _is_uri(self.home) else _local_size(Path(self.home) / f"{name}.lance")
            out.append(TableInfo(name, tbl.count_rows(), size, tbl.version))
        return out


WRITE_ERRORS = (OSError, RuntimeError)  # what Lance raises when the disk is full, or the store read-only or gone


def cannot_write(home: str, name: str, exc: BaseException) -> UserError:
    """The one-line error of a failed write to table ``name``."""
    return UserError(f"{home}: cannot write table {name} ({str(exc).splitlines()[0]})")


_NO_STORE = "no memtape store at {home}: nothing has been backfilled there (check --home or MEMTAPE_HOME)"


def column_is(column: str, value: Any) -> pc.Expression:
    """The rows whose ``column`` equals ``value``."""
    return pc.field(column) == pc.scalar(value)


def any_of(column: str, values: Iterable[str]) -> pc.Expression:
    """The rows whose string ``column`` is any of ``values`` (none for no values)."""
    return pc.field(column).isin(pa.array(list(values), pa.string()))


def not_archived() -> pc.Expression:
    """Memories still in the recall index: ``archived`` unset or false (``forget`` sets it)."""
    return pc.field("archived").is_null() | ~pc.field("archived")


def _checked(where: pc.Expression | None) -> pc.Expression | None:
    """``where`` itself; SQL text is refused, so no caller can build a filter by pasting values into it."""
    if where is not None and not isinstance(where, pc.Expression):
        raise TypeError(f"a store filter is a pyarrow expression built from values, not {type(where).__name__}: {where!r}")
    return where


def search_filter(tenant: str, *, live_only: bool = False, subjects: Sequence[str] | None = None,
                  ends_from: datetime | None = None, starts_before: datetime | None = None,
                  source_kind: str | None = None) -> str:
    """The filter of a lancedb vector or full-text search, as the SQL text that search takes, built from values here.

    lancedb's searches take SQL text or its own expression type, which cannot
    say IS NULL or test a list, so this is the one filter memtape writes as
    SQL for the engine; every value goes through ``sql_literal``.
    ``live_only`` drops archived (forgotten) memories; ``subjects`` keeps rows
    about any of them; a row without ``end_time`` or ``start_time`` passes
    ``ends_from`` or ``starts_before``.
    """
    parts = [f"tenant = {sql_literal(tenant)}"]
    if live_only:
        parts.append("(archived IS NULL OR archived = false)")
    if subjects is not None:
        parts.append(f"array_has_any(subjects, [{', '.join(map(sql_literal, subjects)) or 'NULL'}])")
    if ends_from is not None:
        parts.append(f"(end_time IS NULL OR end_time >= {sql_literal(ends_from)})")
    if starts_before is not None:
        parts.append(f"(start_time IS NULL OR start_time < {sql_literal(starts_before)})")
    if source_kind is not None:
        parts.append(f"source_kind = {sql_literal(source_kind)}")
    return " AND ".join(parts)


def sql_literal(value: str | datetime) -> str:
    """``value`` as a SQL literal: the one quoting function, for ``search_filter`` and SQL printed for a person to run.

    A string goes between single quotes with each single quote doubled, the
    SQL standard that both Lance and DuckDB read (a backslash is an ordinary
    character in both); a time becomes a UTC ``TIMESTAMP`` literal (a naive
    time is taken as UTC, as the tables store it).
    """
    if isinstance(value, datetime):
        utc = value.astimezone(timezone.utc) if value.tzinfo else value
        return f"TIMESTAMP '{utc.strftime('%Y-%m-%d %H:%M:%S.%f')}'"
    return "'" + value.replace("'", "''") + "'"


def last_per_key(data: pa.Table, key: str) -> pa.Table:
    """Keep one row per key (the last offered): Lance would insert both copies of a new key."""
    keys = data.column(key).to_pylist()
    last = {k: i for i, k in enumerate(keys)}
    if len(last) == len(keys):
        return data
    return data.take(sorted(last.values()))


def land(store: Store, name: str, batches: Iterable[list[dict]]) -> int:
    """Land an iterable of row batches into one table; the single writer for that table."""
    return sum(store.upsert(name, batch) for batch in batches)
