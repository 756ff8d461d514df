"""The ``memtape`` command: a thin dispatcher over ``memtape.commands``.

Each subcommand lives in ``memtape/commands/<name>.py`` as a click command
named ``command`` and is imported only when used, so ``memtape --help`` stays
fast and a broken optional stage never blocks the others. Commands parse
arguments and call the same functions the Python API exposes.
"""
from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import re
import sys

import click

_BEAM_STEP = re.compile(r" \[while running '[^']*'\]")


class LazyGroup(click.Group):
    """A click group whose subcommands are the ``command`` objects of the modules in a package."""

    def __init__(self, *args, package: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.package = package

    def list_commands(self, ctx: click.Context) -> list[str]:
        pkg = importlib.import_module(self.package)
        names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
        return sorted(n.replace("_", "-") for n in names)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.list_commands(ctx):
            return None
        module = importlib.import_module(f"{self.package}.{name.replace('-', '_')}")
        return module.command


@click.group(cls=LazyGroup, package="memtape.commands", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="memtape")
def cli() -> None:
    """memtape: stream chats, mail, meetings and health records into long-term memory tables."""


def _quiet_logging() -> None:
    """Log warnings to stderr, minus Beam's import-time notice about optional GCP clients."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().handlers[0].addFilter(lambda record: "apitools" not in record.getMessage())
    # Beam logs a failed step's traceback before re-raising; main() reports that error itself, in one line.
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)
    # The job service repeats each worker process's startup warnings (no semi-persistent directory, unparseable
    # arguments), which say nothing a user can act on; a worker's errors still come through.
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)


def _quiet_model_loading() -> None:
    """Silence the model libraries' own loading bars (``Loading weights: 0/103``): progress lines cover that time."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def main() -> None:
    """Entry point: run the CLI, turning expected failures into one clear line and exit code 1."""
    from memtape.errors import UserError

    _quiet_logging()
    _quiet_model_loading()
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UserError as exc:
        # Beam re-raises a step's error with "[while running 'Step/Name']" appended: the step is noise to a user.
        click.echo(f"error: {_BEAM_STEP.sub('', str(exc))}", err=True)
        sys.exit(1)
