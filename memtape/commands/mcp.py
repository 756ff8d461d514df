"""``memtape mcp``: the Model Context Protocol server for agents, over stdio or streamable HTTP."""
from __future__ import annotations

import click

from memtape.commands._common import home_option, open_store, tenant_option


@click.command()
@tenant_option
@home_option
@click.option("--http", "over_http", is_flag=True, help="Serve streamable HTTP at /mcp instead of stdio; needs --tokens.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind with --http.")
@click.option("--port", type=click.IntRange(1, 65535), default=8766, show_default=True, help="Port with --http.")
@click.option("--tokens", "tokens_file", type=click.Path(dir_okay=False), default=None,
              help="With --http: the token file of memtape serve; requests need the tenant's bearer token "
                   "[default: env MEMTAPE_SERVICE_TOKENS].")
def command(tenant: str, home: str | None, over_http: bool, host: str, port: int, tokens_file: str | None) -> None:
    """Serve TENANT's memories to an agent: tools recall (cited context) and sql (read-only).

    Over stdio by default, for an agent client that starts it as a subprocess.
    """
    from memtape.mcp_server import build_server, http_app

    server = build_server(open_store(home, create=False), tenant)
    if not over_http:
        server.run("stdio")
        return
    import uvicorn

    from memtape.service import load_tokens

    app = http_app(server, tenant, load_tokens(tokens_file))
    click.echo(f"memtape mcp: tenant {tenant} on http://{host}:{port}/mcp", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
