"""Memories joined to their raw events: the ``unnest`` form the README's analyst section gives, against ``list_contains``.

Usage: python benchmarks/bench_analyst_join.py [--home DIR] [--runs 3]
Runs both forms of the same join (one row per memory and raw event it cites,
with the raw event's text) over an existing store through ``memtape.query.sql``
in one process, after one warm-up scan, and prints JSON: rows (equal for both
forms) and the median wall seconds of ``--runs``. Without a store at ``--home``
(default ``MEMTAPE_HOME`` or ``./memtape-data``; ``make demo`` makes one) it says so and exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from memtape.connectors.lance_store import Store
from memtape.errors import UserError
from memtape.query import sql

COLUMNS = "m.memory_id, m.header, r.event_id, r.source_uri, r.source_id, r.sender, r.event_time, r.text AS said"
FORMS = {
    "list_contains": f"SELECT {COLUMNS} FROM memories AS m JOIN raw_events AS r "
                     "ON m.tenant = r.tenant AND list_contains(m.raw_event_ids, r.event_id)",
    "unnest": f"SELECT {COLUMNS} FROM (SELECT *, unnest(raw_event_ids) AS event_id FROM memories) AS m "
              "JOIN raw_events AS r USING (tenant, event_id)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("MEMTAPE_HOME", "./memtape-data"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    try:
        store = Store.open(args.home, create=False)
    except UserError as exc:
        print(json.dumps({"skipped": str(exc)}))
        return
    sql("SELECT count(*) FROM raw_events", store)  # open the datasets once, outside the timings
    report: dict = {"memories": store.count("memories"), "raw_events": store.count("raw_events"), "loadavg_1m": os.getloadavg()[0]}
    for name, query in FORMS.items():
        seconds, rows = [], 0
        for _ in range(args.runs):
            start = time.perf_counter()
            rows = sql(query, store).num_rows
            seconds.append(time.perf_counter() - start)
        report[name] = {"rows": rows, "median_s": round(statistics.median(seconds), 3), "runs_s": [round(s, 3) for s in seconds]}
    report["speedup"] = round(report["list_contains"]["median_s"] / report["unnest"]["median_s"], 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
