"""``memtape plot ...``: pictures a person looks at to trust a stage, drawn from the store.

``memtape plot episodes --conversation ID --out FILE.png`` draws one
conversation's surprise curve (in trailing standard deviations, as the
segmenter scores it) with the boundary threshold ``gamma`` and each episode
boundary marked by the signal that fired. Drawing is a pure function of
EPISODES rows (``plot_episodes``); the command only loads them. This module
reads the store; it never writes it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import click

from memtape.commands._common import home_option, open_store, tenant_option
from memtape.errors import UserError

SIGNAL_COLOURS = {"surprise": "tab:red", "time_gap": "tab:blue", "structure": "tab:green",
                  "idle": "tab:gray", "end": "tab:gray"}
FIGURE_SIZE = (12, 4)


def _order(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Episodes in conversation order: by start time when all have one, else as given."""
    if all(r.get("start_time") is not None for r in rows):
        return sorted(rows, key=lambda r: r["start_time"])
    return list(rows)


def plot_episodes(rows: Sequence[dict[str, Any]], out: Path, gamma: float | None = None, title: str = "") -> Path:
    """Draw the surprise curve of the episodes in ``rows`` (one conversation) to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from memtape.transforms.segment import GAMMA

    gamma = GAMMA if gamma is None else gamma
    rows = _order(rows)
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    x = 0
    seen: set[str] = set()
    for i, row in enumerate(rows):
        values = [v if v is not None else float("nan") for v in (row.get("surprise") or [])]
        xs = range(x, x + len(values))
        ax.plot(list(xs), values, color="black", linewidth=1)
        ax.axvspan(x - 0.5, x + len(values) - 0.5, color="tab:blue" if i % 2 else "tab:orange", alpha=0.08)
        x += len(values)
        signal = row.get("boundary_signal") or "end"
        if i < len(rows) - 1 or signal not in ("end", "idle"):
            label = None if signal in seen else f"boundary: {signal}"
            seen.add(signal)
            ax.axvline(x - 0.5, color=SIGNAL_COLOURS.get(signal, "tab:purple"), linestyle="--", label=label)
    ax.axhline(gamma, color="tab:red", linewidth=0.8, alpha=0.6, label=f"threshold (gamma = {gamma:g})")
    ax.set_xlabel("unit in conversation")
    ax.set_ylabel("surprise (trailing std devs)")
    ax.set_title(title or f"{len(rows)} episodes, {x} units")
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


@click.group()
def command() -> None:
    """Draw pictures of what a stage did (PNG files)."""


@command.command("episodes")
@click.option("--conversation", required=True, help="conversation_id whose episodes to draw.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG file to write.")
@home_option
@tenant_option
def episodes(conversation: str, out: Path, home: str | None, tenant: str) -> None:
    """Surprise curve of one conversation with the threshold and episode boundaries marked."""
    from memtape.connectors.lance_store import quote_literal

    where = f"conversation_id = {quote_literal(conversation)} AND tenant = {quote_literal(tenant)}"
    rows = open_store(home, create=False).read("episodes", where=where).to_pylist()
    if not rows:
        raise UserError(f"no episodes for conversation {conversation!r} of tenant {tenant!r}")
    click.echo(str(plot_episodes(rows, out, title=f"conversation {conversation}")))
