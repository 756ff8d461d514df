"""Fixed cost of a streaming micro-batch: one-row runs with Beam's own introspection and with memtape's memoised one.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_microbatch.py [--batches 20]
Validation size: ``--batches 4``.

Runs the streaming job's ``MicroBatcher`` on a fresh temporary store, one
landed raw row per micro-batch (one conversation, nothing closes), so each
run's time is its fixed cost: building, translating and starting the Beam
pipeline, reading the carried state and landing the tables. Runs alternate
between Beam's shipped introspection (``memoise_introspection(False)`` and
plain pipeline options) and the memoised one the job uses, after one warm-up
run of each, so both see the same machine load. Prints one JSON line: the
median seconds per micro-batch of each, their ratio, ``inspect.signature``
calls per run, and the load average.
"""
from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream_common import machine  # noqa: E402

from memtape.connectors.beam_io import RAW  # noqa: E402
from memtape.connectors.lance_store import Store  # noqa: E402
from memtape.pipelines.beam_introspection import memoise_introspection  # noqa: E402
from memtape.pipelines.runner import pipeline_options  # noqa: E402
from memtape.pipelines.stream_batches import Landed, MicroBatcher, StreamStats  # noqa: E402
from memtape.schemas.records import RawEvent  # noqa: E402

CHECKPOINT = "stream:bench:bench.raw.im:0"
START = datetime(2024, 5, 1, tzinfo=timezone.utc)


class SignatureCounter:
    """Counts ``inspect.signature`` calls while installed (Beam's introspection goes through it)."""

    def __init__(self) -> None:
        self.calls = 0
        self._shipped = inspect.signature

    def __enter__(self) -> SignatureCounter:
        def counted(*args: Any, **kwargs: Any) -> inspect.Signature:
            self.calls += 1
            return self._shipped(*args, **kwargs)

        inspect.signature = counted  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        inspect.signature = self._shipped  # type: ignore[assignment]


def one_row_batch(store: Store, batcher: MicroBatcher, offset: int) -> float:
    """Land one raw row as the consumer thread does, then time the micro-batch that derives it."""
    event = RawEvent("bench", "im", "bench-microbatch", str(offset), f"Dana says the budget review moved to Friday, item {offset}.",
                     START + timedelta(seconds=offset), conversation_id="standup", sender="dana")
    event.ingest_path = "stream"
    row = event.to_row()
    store.upsert(RAW, [row])
    start = time.perf_counter()
    batcher.step([Landed(CHECKPOINT, offset, row)], {CHECKPOINT})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="measured micro-batches of each kind (after one warm-up each)")
    args = parser.parse_args()
    plain = pipeline_options()
    load_before = machine()["loadavg_1m"]
    seconds: dict[str, list[float]] = {"shipped": [], "memoised": []}
    signature_calls: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-microbatch-") as home:
        store = Store(home)
        batcher = MicroBatcher(store, plain, idle_timeout_s=3600.0, stats=StreamStats())
        memoised = batcher.options
        for n in range(2 * (args.batches + 1)):
            kind = "memoised" if n % 2 else "shipped"
            memoise_introspection(kind == "memoised")
            batcher.options = memoised if kind == "memoised" else plain
            with SignatureCounter() as counter:
                took = one_row_batch(store, batcher, n)
            if n >= 2:  # the first run of each kind loads models and fills caches
                seconds[kind].append(took)
                signature_calls[kind] = counter.calls
        memoise_introspection()
    shipped, memo = statistics.median(seconds["shipped"]), statistics.median(seconds["memoised"])
    print(json.dumps({
        "benchmark": "microbatch_fixed_cost", "batches": args.batches,
        "shipped_median_s": round(shipped, 3), "memoised_median_s": round(memo, 3), "ratio": round(shipped / memo, 2),
        "signature_calls_per_run": signature_calls,
        "machine": {**machine(), "loadavg_1m_at_start": load_before},
    }))


if __name__ == "__main__":
    main()
