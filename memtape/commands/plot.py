"""``memtape plot ...``: pictures a person looks at to trust a stage, drawn from the store.

``memtape plot episodes --conversation ID --out FILE.png`` draws one
conversation's surprise curve (in trailing standard deviations, as the
segmenter scores it) with the base boundary threshold ``gamma`` and each
episode boundary marked by the signal that fired; where the conversation's raw
events carry times, the x axis is labelled with them. Long conversations get a
wider figure and thinner lines, so a 1,400-message log stays readable. Drawing
is a pure function of EPISODES rows and times (``plot_episodes``); the command
only loads them. This module reads the store; it never writes it.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

import click

from memtape.commands._common import home_option, open_store, tenant_option
from memtape.errors import UserError

SIGNAL_COLOURS = {"surprise": "tab:red", "time_gap": "tab:blue", "structure": "tab:green",
                  "length": "tab:orange", "idle": "tab:gray", "end": "tab:gray"}
FIGURE_HEIGHT = 4.0
MIN_WIDTH, MAX_WIDTH = 12.0, 24.0  # inches: wider for long conversations, never wider than a screen
UNITS_PER_INCH = 60  # beyond this density the curve and the boundary lines blur together
TIME_TICKS = 10  # about this many time labels on the x axis
DENSE = 300  # from this many units, thinner lines keep the curve and the cuts apart
Y_PERCENTILES = (0.5, 99.5)  # the y range covers these percentiles, so one spike does not flatten the rest


def _order(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Episodes in conversation order: by start time when all have one, else as given."""
    if all(r.get("start_time") is not None for r in rows):
        return sorted(rows, key=lambda r: r["start_time"])
    return list(rows)


def time_ticks(when: Sequence[datetime], count: int = TIME_TICKS) -> tuple[list[int], list[str]]:
    """About ``count`` unit positions and their time labels, the date added where it changes.

    The x axis stays one step per unit, so a burst of messages is as readable as a quiet
    hour and a night's silence takes no room; the labels say when each stretch happened.
    """
    positions = list(range(0, len(when), max(1, len(when) // count)))
    labels, last_day = [], None
    for i in positions:
        day = when[i].date()
        labels.append(when[i].strftime("%H:%M\n%Y-%m-%d" if day != last_day else "%H:%M"))
        last_day = day
    return positions, labels


def plot_episodes(rows: Sequence[dict[str, Any]], out: Path, gamma: float | None = None, title: str = "",
                  times: Mapping[str, datetime] | None = None) -> Path:
    """Draw the surprise curve of the episodes in ``rows`` (one conversation) to ``out``.

    ``times`` maps member event ids to their event times; when every member has one, the x axis is labelled in time.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from memtape.transforms.segment import GAMMA

    gamma = GAMMA if gamma is None else gamma
    rows = _order(rows)
    members = [m for row in rows for m in row.get("member_ids") or []]
    values = [v if v is not None else float("nan") for row in rows for v in (row.get("surprise") or [])]
    dense = len(values) >= DENSE
    width = min(MAX_WIDTH, max(MIN_WIDTH, len(values) / UNITS_PER_INCH))
    fig, ax = plt.subplots(figsize=(width, FIGURE_HEIGHT))
    ax.plot(range(len(values)), values, color="black", linewidth=0.6 if dense else 1)
    x = 0
    seen: set[str] = set()
    for i, row in enumerate(rows):
        size = len(row.get("surprise") or [])
        ax.axvspan(x - 0.5, x + size - 0.5, color="tab:blue" if i % 2 else "tab:orange", alpha=0.08, linewidth=0)
        x += size
        signal = row.get("boundary_signal") or "end"
        if i < len(rows) - 1 or signal not in ("end", "idle"):
            label = None if signal in seen else f"boundary: {signal}"
            seen.add(signal)
            ax.axvline(x - 0.5, color=SIGNAL_COLOURS.get(signal, "tab:purple"), linestyle="--",
                       linewidth=0.6 if dense else 1, alpha=0.7 if dense else 1, label=label)
    ax.axhline(gamma, color="tab:red", linewidth=0.8, alpha=0.6,
               label=f"gamma = {gamma:g} (base threshold, raised where topics dwell)")
    finite = [v for v in values if v == v]
    if finite:
        low, high = np.percentile(finite, Y_PERCENTILES)
        ax.set_ylim(min(low, 0.0) - 0.5, max(high, gamma) + 0.5)
    ax.set_xlim(-0.5, max(len(values), 1) - 0.5)
    when = [t for t in (times.get(m) for m in members) if t is not None] if times else []
    if when and len(when) == len(members):
        positions, labels = time_ticks(when)
        ax.set_xticks(positions)
        ax.set_xticklabels(labels, fontsize="small")
        ax.set_xlabel(f"time of the unit at each tick ({when[0].tzname() or 'UTC'}); one step per unit")
    else:
        ax.set_xlabel("unit in conversation")
    ax.set_ylabel("surprise (trailing std devs)")
    ax.set_title(title or f"{len(rows)} episodes, {x} units")
    ax.legend(loc="upper right", fontsize="small", framealpha=0.9)
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
    from memtape.connectors.lance_store import column_is

    where = column_is("conversation_id", conversation) & column_is("tenant", tenant)
    store = open_store(home, create=False)
    rows = store.read("episodes", where=where).to_pylist()
    if not rows:
        raise UserError(f"no episodes for conversation {conversation!r} of tenant {tenant!r}")
    events = store.read("raw_events", where=where, columns=["event_id", "event_time"]).to_pylist()
    times = {e["event_id"]: e["event_time"] for e in events if e["event_time"] is not None}
    click.echo(str(plot_episodes(rows, out, title=f"conversation {conversation}", times=times)))
