"""``memtape recall``: the packed context for a query, with each item's provenance."""
from __future__ import annotations

import json

import click

from memtape.commands._common import home_option, open_store, parse_time, tenant_option


@click.command()
@click.argument("query")
@tenant_option
@home_option
@click.option("--budget", type=click.IntRange(min=1), default=1000, show_default=True, help="Context tokens (words x 1.3).")
@click.option("--since", callback=parse_time, default=None, help="Only memories that end at or after this ISO date-time.")
@click.option("--until", callback=parse_time, default=None, help="Only memories that start before this ISO date-time.")
@click.option("--source-kind", type=click.Choice(["im", "email", "meeting", "health"]), default=None, help="Only this kind of source.")
@click.option("--subject", default=None, help="Only memories about this person: a name, email address or id (Patient/ID).")
@click.option("--max-items", type=click.IntRange(min=1), default=None, help="At most this many items.")
@click.option("--min-score", type=click.FloatRange(min=0.0), default=None,
              help="Leave out items scoring below this [default: those that do not stand out from the candidates: "
                   "half their median plus 0.3 of the best item's lead over it].")
@click.option("--order", type=click.Choice(["relevance", "time"]), default="relevance", show_default=True,
              help="relevance: the best memory first, its items in time order; time: oldest first.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text prints the context, then one provenance line per item; json prints the whole result.")
def command(query: str, tenant: str, home: str | None, budget: int, since, until, source_kind: str | None, subject: str | None,
            max_items: int | None, min_score: float | None, order: str, fmt: str) -> None:
    """Recall TENANT's memories for QUERY: at most BUDGET tokens, fewer when fewer lines are relevant.

    A query naming one person who has memories of their own (or --subject) is
    answered from the memories about them only.
    """
    from memtape.recall import recall

    store = open_store(home, create=False)
    store.require_tenant(tenant)
    result = recall(query, tenant, budget, since, until, source_kind, store=store, subject=subject,
                    max_items=max_items, min_score=min_score, order=order)
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False, default=str))
        return
    if not result.items:
        click.echo(f"no items: {result.reason}", err=True)
        return
    click.echo(result.context)
    click.echo()
    for item in result.items:
        when = item.event_time.isoformat() if item.event_time else "undated"
        click.echo(f"# {item.memory_id or 'working memory'} {when} {','.join(item.sources) or '-'} events={len(item.raw_event_ids)} "
                   f"ids={','.join(item.source_ids[:5])}{'...' if len(item.source_ids) > 5 else ''}")
    click.echo(f"# {len(result.items)} items, {result.tokens:.0f}/{budget} tokens, {result.latency_ms:.0f} ms")
