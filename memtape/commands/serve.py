"""``memtape serve``: the HTTP service (recall and read-only SQL, one token per tenant)."""
from __future__ import annotations

import click

from memtape.commands._common import home_option, open_store


@click.command()
@home_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind; other than loopback exposes the service.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option("--tokens", "tokens_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file with a [tokens] table (tenant = \"token\") [default: env MEMTAPE_SERVICE_TOKENS].")
@click.option("--sql-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds a SQL statement may run before it is interrupted (HTTP 408).")
def command(home: str | None, host: str, port: int, tokens_file: str | None, sql_timeout: float) -> None:
    """Serve recall and read-only SQL over HTTP; OpenAPI schema at /openapi.json, docs at /docs."""
    from memtape.service import load_tokens, serve

    tokens = load_tokens(tokens_file)
    click.echo(f"memtape serve: {len(tokens)} tenants on http://{host}:{port}", err=True)
    serve(open_store(home), tokens, host, port, sql_timeout)
