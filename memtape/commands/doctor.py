"""``memtape doctor``: show the configuration and check store, models and broker."""
from __future__ import annotations

import json

import click

from memtape.commands._common import home_option


@click.command()
@home_option
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="TOML config file.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(home: str | None, config_path: str | None, fmt: str) -> None:
    """Print the effective configuration, then check that the store, models and broker are usable.

    Exits 1 when any required check fails, naming the table, fragment, file or address at fault;
    an optional one (no broker configured, no store yet) is marked "opt" and does not fail.
    """
    from memtape.config import load_config
    from memtape.doctor import run_checks

    cfg = load_config(config_path)
    if home:
        cfg.store.home = home
    checks = run_checks(cfg)
    if fmt == "json":
        click.echo(json.dumps({"config": cfg.as_dict(), "checks": [c.__dict__ for c in checks]}, default=str))
    else:
        shown = cfg.as_dict()
        if shown["kafka"].get("sasl_password"):
            shown["kafka"]["sasl_password"] = "***"
        click.echo("config:")
        for section, values in shown.items():
            click.echo(f"  {section}: {values}")
        for c in checks:
            click.echo(f"{'ok  ' if c.ok else 'FAIL' if c.required else 'opt '} {c.name}: {c.detail}")
    if not all(c.ok for c in checks if c.required):
        raise SystemExit(1)
