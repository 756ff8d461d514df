"""Options and output helpers shared by the subcommands."""
from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any, Callable

import click
import pyarrow as pa

home_option = click.option("--home", envvar="MEMTAPE_HOME", default=None,
                           help="Store folder or object-store URI [env MEMTAPE_HOME; default ./memtape-data].")
tenant_option = click.option("--tenant", envvar="MEMTAPE_TENANT", default="default", show_default=True,
                             help="Tenant the data belongs to [env MEMTAPE_TENANT].")


def parse_time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """An ISO 8601 date or date-time; a naive value is read as UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date or date-time") from exc
    if parsed.tzinfo is None:
        from datetime import timezone

        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def open_store(home: str | None, create: bool = True) -> Any:
    """The store at ``home``; read commands pass ``create=False`` so a mistyped home fails instead of appearing empty."""
    from memtape.connectors.lance_store import Store

    return Store.open(home, create)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


_FORMULA_START = r"^[=+\-@\t\r]"  # what a spreadsheet reads as the start of a formula


def _formula_safe(table: pa.Table) -> pa.Table:
    """Prefix text cells a spreadsheet would run as a formula (``=HYPERLINK(...)``) with ``'``, so they open as text."""
    import pyarrow.compute as pc

    columns = []
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            risky = pc.fill_null(pc.match_substring_regex(column, _FORMULA_START), False)
            column = pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def print_table(table: pa.Table, fmt: str, out: Callable[[str], None] = click.echo) -> None:
    """Print an Arrow table as an aligned text table, JSON (an array of row objects) or CSV."""
    rows = table.to_pylist()
    if fmt == "json":
        out(json.dumps(rows, default=str, ensure_ascii=False))
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        sink = pa.BufferOutputStream()
        pacsv.write_csv(_formula_safe(table), sink)
        out(sink.getvalue().to_pybytes().decode().rstrip("\n"))
    else:
        names = table.column_names
        cells = [[_cell(r[n]) for n in names] for r in rows]
        widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
        out("  ".join(n.ljust(w) for n, w in zip(names, widths)))
        out("  ".join("-" * w for w in widths))
        for c in cells:
            out("  ".join(v.ljust(w) for v, w in zip(c, widths)))
        out(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def write_parquet(table: pa.Table, path: str | None) -> None:
    import pyarrow.parquet as pq

    if path is None:
        pq.write_table(table, sys.stdout.buffer)
    else:
        pq.write_table(table, path)
