"""Write throughput of the Lance sink on raw_events: sharded append committed once, against the single keyed writer.

Usage: python benchmarks/bench_lance_sink.py [--data ../shared/data] [--copies 10] [--repeats 3]

Reads the shared Enron Maildir once and lands it ``--copies`` times (each copy
with its own event ids, so every row is new) into a fresh store per run, in one
Beam pipeline each way: ``WriteToLance`` (append-only table: parallel shard
writers, one commit) and the previous shape, every row through one writer that
merge-inserts chunk by chunk (still the path of keyed tables). Prints one JSON
object: rows, median seconds and rows/s of each, and their ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import apache_beam as beam
from bench_backfill import SHARED, TENANT

from memtape.connectors.base import read_source
from memtape.connectors.beam_io import LanceWriteConfig, _MergeInsertFn
from memtape.connectors.lance_store import Store
from memtape.schemas.records import RawEvent, stable_id


def copies_of(rows: list[dict], copies: int) -> list[dict]:
    return [{**row, "event_id": stable_id(row["event_id"], str(c))} for c in range(copies) for row in rows]


def land(rows: list[dict], shape: str) -> float:
    """Seconds one pipeline takes to land ``rows`` into a fresh store, the table checked to hold each row once."""
    home = tempfile.mkdtemp(prefix="bench-sink-")
    config = LanceWriteConfig("raw_events", home)
    start = time.perf_counter()
    with beam.Pipeline() as p:
        given = p | beam.Create(rows)
        if shape == "sharded_append":
            given | config.create_write_transform()
        else:
            given | beam.WithKeys(lambda _row: config.table) | beam.GroupByKey() | beam.ParDo(_MergeInsertFn(config))
    seconds = time.perf_counter() - start
    stored = Store(home).read("raw_events", columns=["event_id"]).column("event_id")
    assert len(stored) == len(rows) == len(set(stored.to_pylist())), (shape, len(stored), len(rows))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    mail = args.data / "email" / "skilling-j"
    if not mail.is_dir():
        raise SystemExit(f"{mail}: the shared Enron Maildir is missing")
    base = [r.to_row() for r in read_source(f"maildir:{mail}", TENANT) if isinstance(r, RawEvent)]
    rows = copies_of(base, args.copies)
    seconds = {shape: statistics.median(land(rows, shape) for _ in range(args.repeats))
               for shape in ("single_keyed_writer", "sharded_append")}
    out: dict[str, object] = {"rows": len(rows)}
    for shape, s in seconds.items():
        out[f"{shape}_s"], out[f"{shape}_rows_per_s"] = round(s, 2), round(len(rows) / s, 1)
    out["speedup"] = round(seconds["single_keyed_writer"] / seconds["sharded_append"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
