"""``memtape tables``: each table's rows, size on disk and Lance version."""
from __future__ import annotations

import click
import pyarrow as pa

from memtape.commands._common import home_option, open_store, print_table


@click.command()
@home_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def command(home: str | None, fmt: str) -> None:
    """List every memtape table with its row count, bytes and Lance version."""
    infos = open_store(home, create=False).info()
    print_table(pa.Table.from_pylist([{"table": i.name, "rows": i.rows, "bytes": i.bytes, "version": i.version}
                                      for i in infos]), fmt)
