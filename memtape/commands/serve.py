"""``memtape serve``: the HTTP service (recall and read-only SQL, one token per tenant), and making its tokens."""
from __future__ import annotations

import click

from memtape.commands._common import home_option, open_store

DEFAULT_TOKENS_FILE = "memtape-tokens.toml"


@click.command()
@home_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind; other than loopback exposes the service.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option("--tokens", "tokens_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file with a [tokens] table (tenant = \"token\") [default: env MEMTAPE_SERVICE_TOKENS; "
                   f"with --new-token: {DEFAULT_TOKENS_FILE}].")
@click.option("--new-token", "new_token_for", metavar="TENANT", default=None,
              help="Make a random token for TENANT, write it to the --tokens file (created if missing), print it and exit.")
@click.option("--sql-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds a SQL statement may run before it is interrupted (HTTP 408).")
def command(home: str | None, host: str, port: int, tokens_file: str | None, new_token_for: str | None, sql_timeout: float) -> None:
    """Serve recall and read-only SQL over HTTP; OpenAPI schema at /openapi.json, docs at /docs.

    First make a token per tenant: memtape serve --new-token alice; then: memtape serve --tokens memtape-tokens.toml
    """
    from memtape.service import add_token, load_tokens, serve

    if new_token_for is not None:
        path = tokens_file or DEFAULT_TOKENS_FILE
        token = add_token(path, new_token_for)
        click.echo(f"memtape serve: token for tenant {new_token_for} written to {path}", err=True)
        click.echo(token)
        return
    tokens = load_tokens(tokens_file)
    click.echo(f"memtape serve: {len(tokens)} tenants on http://{host}:{port}", err=True)
    serve(open_store(home, create=False), tokens, host, port, sql_timeout)
