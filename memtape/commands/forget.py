"""``memtape forget``: archive memories whose retention fell below a threshold, keeping raw data."""
from __future__ import annotations

import click

from memtape.commands._common import home_option, open_store, tenant_option


@click.command()
@tenant_option
@home_option
@click.option("--below", type=click.FloatRange(0.0, 1.0), required=True,
              help="Archive memories whose retention exp(-t/S) is below this (0..1).")
@click.option("--dry-run", is_flag=True, help="Only count what would be archived.")
def command(tenant: str, home: str | None, below: float, dry_run: bool) -> None:
    """Archive TENANT's weak memories out of the recall index (raw events and derived rows stay).

    The policy (time unit, exempt source kinds: health by default) comes from
    MEMTAPE_FORGETTING_* variables; with MEMTAPE_FORGETTING_ENABLED=false nothing is archived.
    """
    from memtape.forgetting import ForgettingPolicy, forget

    policy = ForgettingPolicy.from_env()
    archived = forget(open_store(home, create=False), tenant, below, policy, dry_run=dry_run)
    verb = "would archive" if dry_run else "archived"
    click.echo(f"{verb} {len(archived)} memories of tenant {tenant!r} with retention below {below}")
