"""Connector throughput: records per second reading the shared Enron Maildir and Synthea FHIR bundles.

Each source is read end to end (parse, thread, map to ``RawEvent``) REPEATS
times; the median wall time gives records/s. Nothing is written. Prints one
JSON object. Run: python benchmarks/bench_connectors.py [--repeats N]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from memtape.connectors.base import read_source

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = {
    "enron_maildir": f"maildir:{SHARED / 'email' / 'skilling-j'}",
    "fhir_bundles": f"fhir:{SHARED / 'health' / 'fhir'}",
}
REPEATS = 3


def measure(uri: str, repeats: int) -> dict:
    """Median records/s over ``repeats`` full reads of one source."""
    seconds, count = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = sum(1 for _ in read_source(uri, "bench"))
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"uri": uri, "records": count, "median_s": round(median, 3), "records_per_s": round(count / median, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    if not SHARED.exists():
        print(json.dumps({"skipped": f"{SHARED} absent: shared data not checked out beside the repo"}))
        return
    print(json.dumps({name: measure(uri, args.repeats) for name, uri in SOURCES.items()}, indent=1))


if __name__ == "__main__":
    main()
