"""Progress of a long run on stderr, so a backfill is never silent for minutes.

On a terminal each phase gets a tqdm bar (rows per table beside it); without one (a log file, a
supervisor) a line goes to stderr every ``LINE_EVERY_S`` seconds (within 10 s),
naming the stage, the records read so far and the rate, even while a stage
is busy loading models. ``CountProgress`` is a pass-through step that counts
the elements crossing it into the active ``Progress``; it counts in the
driver's process (the direct runner with one worker); where steps run in
other processes (``--workers N``, Dask) the line shows the phase and the time.
This module only reports: it never changes an element.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Iterator, TextIO

import apache_beam as beam

# The cadence of lines without a terminal: 8 s keeps two lines within 10 s even when a busy process
# (model steps holding the interpreter) answers the clock a second or two late.
LINE_EVERY_S = float(os.environ.get("MEMTAPE_PROGRESS_EVERY_S", "8"))
RECORDS = "records"  # the stage counting source records read; every other stage counts rows of a table

_ACTIVE: "Progress | None" = None
_LOCK = threading.Lock()


class Progress:
    """Counts per stage for one command, shown as a tqdm bar per phase on a terminal or periodic stderr lines otherwise."""

    def __init__(self, label: str, stream: TextIO | None = None, every_s: float = LINE_EVERY_S,
                 counted_here: bool = True) -> None:
        self.label = label
        self.counted_here = counted_here  # False when the steps run in other processes (workers, a cluster)
        self.stream = stream or sys.stderr
        self.bars = self.stream.isatty()
        self.every_s = min(every_s, 1.0) if self.bars else every_s  # a bar's clock ticks every second
        self.counts: dict[str, int] = {}
        self.phase = "starting"
        self._bar: Any = None  # the tqdm bar of the current phase, on a terminal
        self._started = self._phase_started = time.monotonic()
        self._phase_base: dict[str, int] = {}  # the counts when the phase began
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="memtape-progress", daemon=True)

    def __enter__(self) -> "Progress":
        global _ACTIVE
        _ACTIVE = self
        self._ticker.start()
        return self

    def __exit__(self, exc_type: Any, *_exc: Any) -> None:
        global _ACTIVE
        _ACTIVE = None
        self._stop.set()
        self._ticker.join()
        if self._bar is not None:
            self._bar.close()
        if exc_type is None:
            self.line()  # the final counts; a failure is reported alone, in one line

    def stage(self, phase: str, in_workers: bool = False) -> None:
        """Start a phase (reading sources, deriving memories): a new bar, and the rate restarts from here.
        ``in_workers``: its steps run in worker processes, so nothing is counted here from now on."""
        with _LOCK:
            self.phase = phase
            self.counted_here = self.counted_here and not in_workers
            self._phase_started = time.monotonic()
            self._phase_base = dict(self.counts)
            if self.bars:
                from tqdm import tqdm

                if self._bar is not None:
                    self._bar.close()
                self._bar = tqdm(desc=f"{self.label}: {phase}", unit=" rows" if self.counts else " records",
                                 file=self.stream, dynamic_ncols=True)
        self.line()

    def advance(self, name: str, n: int = 1) -> None:
        with _LOCK:
            self.counts[name] = self.counts.get(name, 0) + n
            if self._bar is not None:
                self._bar.update(n)
                self._bar.set_postfix_str(self._rows(), refresh=False)

    def _rows(self) -> str:
        return ", ".join(f"{n:,} {name}" for name, n in self.counts.items() if name != RECORDS)

    def text(self) -> str:
        """One line: phase, records read so far, rows per table, the rate in this phase, time so far."""
        with _LOCK:
            now = time.monotonic()
            records = self.counts.get(RECORDS, 0)
            rows = self._rows()
            read_now = records - self._phase_base.get(RECORDS, 0)
            moved, unit = (read_now, "records") if read_now or not rows else (
                sum(self.counts.values()) - sum(self._phase_base.values()), "rows")
            rate = moved / max(now - self._phase_started, 1e-9)
        if not self.counted_here:
            return f"{self.label}: {self.phase}; records are counted by the workers, totals at the end; {now - self._started:.0f} s"
        line = f"{self.label}: {self.phase}: {records:,} records read"
        if rows:
            line += f"; rows so far: {rows}"
        return f"{line}; {rate:,.0f} {unit}/s in this phase; {now - self._started:.0f} s"

    def line(self) -> None:
        if not self.bars:
            print(self.text(), file=self.stream, flush=True)

    def _tick(self) -> None:
        due = time.monotonic()
        while True:
            due = max(due + self.every_s, time.monotonic())  # a fixed grid: one late line does not delay the next
            if self._stop.wait(due - time.monotonic()):
                return
            if not self.bars:
                self.line()
                continue
            with _LOCK:
                if self._bar is not None:
                    self._bar.refresh()  # the elapsed time moves on while a model loads


def stage(phase: str, in_workers: bool = False) -> None:
    """Start ``phase`` on the active progress of this process, if any (``in_workers``: counted in other processes)."""
    if _ACTIVE is not None:
        _ACTIVE.stage(phase, in_workers)


def advance(name: str, n: int = 1) -> None:
    """Count ``n`` elements of stage ``name`` into the active progress of this process, if any."""
    if _ACTIVE is not None:
        _ACTIVE.advance(name, n)


class _CountFn(beam.DoFn):
    def __init__(self, name: str) -> None:
        self.name = name

    def process(self, element: Any) -> Iterator[Any]:
        advance(self.name)
        yield element


class CountProgress(beam.PTransform):
    """Pass every element through unchanged, counting it as progress of stage ``name``."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | beam.ParDo(_CountFn(self.name))
