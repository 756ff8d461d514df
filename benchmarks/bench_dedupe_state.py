"""Size and load time of one dedupe scope's carried state as its history grows: bounded against unbounded.

Usage: python benchmarks/bench_dedupe_state.py [--data ../shared/data] [--batch 500] [--shrink 1]

Runs the shared Enron Maildir, IRC logs and LoCoMo dev turns as one scope's
history in event order, in micro-batches of ``--batch`` messages, writing the
state to JSON and reading it back between batches as the streaming job and the
backfill carry it. Runs it twice: with the bounds of ``transforms/dedupe/state.py``
(divided by ``--shrink``, to see what they cost on a history longer than the
shared data), and with no bounds, the baseline. Prints one JSON object per run
(final state size, median and last per-batch load and dump seconds) and the
duplicates the bounded run missed: units the unbounded run dropped as repeats
and the bounded one kept.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench_backfill import SHARED, TENANT, parse, text_mix

from memtape.transforms.dedupe import Deduper, DedupeState, TenantState, event_order
from memtape.transforms.dedupe import state as dedupe_state

BOUNDS = ("MAX_REMEMBERED_HASHES", "MAX_REMEMBERED_SENTENCES", "MAX_REMEMBERED_SKETCHES", "MAX_TAIL_LINES_PER_SENDER")
REPEATS = ("exact_duplicate", "near_duplicate")


def run(rows: list[dict], batch: int, bounds: dict[str, int]) -> tuple[dict, set[str]]:
    """One pass over ``rows`` with ``bounds`` in force: its report, and the event ids it dropped as repeats."""
    for name, value in bounds.items():
        setattr(dedupe_state, name, value)
    blob, loads, dumps, repeats = None, [], [], set()
    for start in range(0, len(rows), batch):
        t0 = time.perf_counter()
        state = TenantState.from_dict(json.loads(blob)) if blob else TenantState()
        loads.append(time.perf_counter() - t0)
        for _, dropped in Deduper(DedupeState({TENANT: state})).process_batch(rows[start:start + batch]):
            if dropped is not None and dropped["reason"] in REPEATS:
                repeats.add(dropped["event_id"])
        t0 = time.perf_counter()
        blob = json.dumps(state.to_dict())
        dumps.append(time.perf_counter() - t0)
    report = {"bounds": bounds, "state_mb": round(len(blob) / 1e6, 2), "load_s_median": round(statistics.median(loads), 4),
              "load_s_last": round(loads[-1], 4), "dump_s_median": round(statistics.median(dumps), 4),
              "dropped_as_repeats": len(repeats)}
    return report, repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--batch", type=int, default=500, help="messages per micro-batch")
    parser.add_argument("--shrink", type=int, default=1, help="divide every bound by this")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        rows = sorted((r for r in parse(text_mix(args.data, Path(work), None)) if r.get("text")), key=event_order)
    defaults = {name: getattr(dedupe_state, name) for name in BOUNDS}
    bounded, kept_repeats = run(rows, args.batch, {name: max(1, value // args.shrink) for name, value in defaults.items()})
    unbounded, all_repeats = run(rows, args.batch, {name: 10**9 for name in BOUNDS})
    print(json.dumps({"messages": len(rows), "batch": args.batch, "bounded": bounded, "unbounded": unbounded,
                      "missed_repeats": len(all_repeats - kept_repeats), "extra_repeats": len(kept_repeats - all_repeats)}))


if __name__ == "__main__":
    main()
