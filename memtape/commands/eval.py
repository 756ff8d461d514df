"""``memtape eval ...``: evaluation harnesses that print JSON, one module each in ``memtape.evals``."""
from __future__ import annotations

import click

from memtape.cli import LazyGroup


@click.group(cls=LazyGroup, package="memtape.evals")
def command() -> None:
    """Evaluate a stage against gold data and print the scores (JSON with --format json)."""
