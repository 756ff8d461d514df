"""``memtape sql``: run DuckDB SQL over the memory tables, optionally scoped to one tenant."""
from __future__ import annotations

import click

from memtape.commands._common import home_option, open_store, print_table, write_parquet


@click.command()
@click.argument("query")
@home_option
@click.option("--tenant", default=None,
              help="Only this tenant's rows: every table the query names holds that tenant's rows alone.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "parquet"]), default="table",
              show_default=True, help="json prints an array of row objects; parquet writes to --out or stdout.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="File for --format parquet.")
def command(query: str, home: str | None, tenant: str | None, fmt: str, out: str | None) -> None:
    """Run QUERY over every table (raw_events, episodes, triples, memories, ...) and print the result."""
    from memtape.query import sql

    store = open_store(home, create=False)
    if tenant is not None:
        store.require_tenant(tenant)
    result = sql(query, store, tenant=tenant)
    if fmt == "parquet":
        write_parquet(result, out)
    else:
        print_table(result, fmt)
