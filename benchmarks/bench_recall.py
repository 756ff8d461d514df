"""Recall latency with a large memories table: median and p95 of warm queries, the first one apart.

Usage: python benchmarks/bench_recall.py [--memories 100000] [--tenants 1] [--queries 200] [--home DIR]
Generates ``--memories`` memories (three ``who: text`` lines each, one raw
event per line) from sentence templates over names, activities, places and
times, spread over ``--tenants`` tenants. MiniLM embeds each distinct
template once; a memory's embedding is its template's plus small noise, so
the vector index sees 100,000 distinct points without embedding 100,000 texts.
The store is then maintained exactly as ``memtape maintain`` does it
(compaction, BTree keys, BM25, the ANN index; ``index_s``). Queries go to the
first tenant (the largest with one tenant, the worst case) in one process, as
a service runs them: the model loaded and the tables open after the first
query, which is reported apart (it loads the model and builds the graph);
the setup's garbage is collected before the first.
Latencies are wall-clock per ``recall`` call; ``cpu_p50_ms`` (process CPU per
query) and the load average tell a busy machine from a slow recall. Prints JSON.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone

import numpy as np

from memtape.connectors.lance_store import Store, column_is
from memtape.forgetting import OFF
from memtape.recall import recall
from memtape.pipelines.maintain import maintain
from memtape.schemas.records import RawEvent, stable_id

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Gus", "Hana", "Ivo", "Jun", "Kofi", "Lena"]
ACTIVITIES = ["went hiking", "painted a sunset", "adopted a puppy", "ran a half marathon", "started pottery classes",
              "visited the science museum", "fixed the bike", "baked sourdough", "joined a choir", "planted tomatoes",
              "booked flights", "finished the thesis", "moved apartments", "learned the violin", "went camping"]
PLACES = ["Lisbon", "the lake", "Kyoto", "the old harbour", "Nairobi", "the mountains", "Oslo", "the city park",
          "Montreal", "the beach", "Prague", "the library"]
TIMES = ["yesterday", "last weekend", "two weeks ago", "on Friday", "this morning", "last month", "in June"]
REPLIES = ["That sounds wonderful, tell me more about {place}.", "How did it go with {other}?",
           "I remember {other} mentioned {place} too.", "We should plan something at {place} soon."]
NOISE = 0.08
BATCH = 10_000


def _memory(rng: random.Random, template: int) -> tuple[list[tuple[str, str]], int]:
    """Three (who, text) lines for one memory, built around template ``template``."""
    r = random.Random(template)
    who, other = r.sample(NAMES, 2)
    activity, place, when = r.choice(ACTIVITIES), r.choice(PLACES), r.choice(TIMES)
    lines = [(who, f"I {activity} at {place} {when} with {other}."),
             (other, rng.choice(REPLIES).format(place=place, other=rng.choice(NAMES))),
             (who, f"It was {rng.choice(['great', 'tiring', 'fun', 'long'])}, {rng.randint(2, 40)} of us came along.")]
    return lines, template


def generate(store: Store, memories: int, tenants: int, templates: int, seed: int) -> float:
    """Land the raw events and memories; return the seconds it took."""
    from memtape.transforms.encode import embed_texts

    start = time.perf_counter()
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    base_vectors = embed_texts([" ".join(t for _, t in _memory(random.Random(i), i)[0]) for i in range(templates)])
    t0 = datetime(2023, 1, 1, tzinfo=timezone.utc)
    for offset in range(0, memories, BATCH):
        raws, rows = [], []
        for n in range(offset, min(offset + BATCH, memories)):
            tenant = f"bench-{n % tenants}"
            lines, template = _memory(rng, rng.randrange(templates))
            when = t0 + timedelta(minutes=37 * n)
            events = [RawEvent(tenant, "im", "bench", f"{n}-{k}", text, when + timedelta(seconds=k),
                               conversation_id=f"c{n // 20}", sender=who) for k, (who, text) in enumerate(lines)]
            raws += [e.to_row() for e in events]
            vector = base_vectors[template] + np_rng.normal(0, NOISE, base_vectors.shape[1]).astype(np.float32)
            text = "\n".join(f"{who}: {t}" for who, t in lines)
            rows.append({"tenant": tenant, "memory_id": stable_id(tenant, "bench", n), "source_kind": "im",
                         "conversation_id": f"c{n // 20}", "header": f"who: {lines[0][0]}, {lines[1][0]}; when: {when:%Y-%m-%d}",
                         "text": text, "token_count": len(text.split()), "embedding": (vector / np.linalg.norm(vector)).tolist(),
                         "raw_event_ids": [e.event_id for e in events], "participants": [lines[0][0], lines[1][0]],
                         "start_time": when, "end_time": when + timedelta(seconds=2), "strength": 1.0, "archived": False})
        store.upsert("raw_events", raws)
        store.upsert("memories", rows)
    return time.perf_counter() - start


def queries(count: int, seed: int) -> list[str]:
    rng = random.Random(seed + 1)
    forms = ["When did {who} go to {place}?", "What did {who} do at {place}?", "Who {activity} {when}?",
             "Where did {who} go {when}?", "Did {who} ever {activity}?"]
    return [rng.choice(forms).format(who=rng.choice(NAMES), place=rng.choice(PLACES), activity=rng.choice(ACTIVITIES),
                                     when=rng.choice(TIMES)) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=1)
    parser.add_argument("--templates", type=int, default=2_000, help="distinct texts MiniLM embeds")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--home", default=None, help="store folder [default: a temporary one]")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memtape-bench-recall-") as tmp:
        store = Store(args.home or tmp)
        generate_s = generate(store, args.memories, args.tenants, args.templates, args.seed) if store.count("memories") == 0 else 0.0
        t = time.perf_counter()
        built = [index for report in maintain(store) for index in report.indexes]
        index_s = time.perf_counter() - t
        gc.collect()  # the generator's garbage is the benchmark's, not a service's: collect it before timing
        asked = queries(args.queries + 1, args.seed)
        first = recall(asked[0], "bench-0", args.budget, store=store, forgetting=OFF, reinforce_recalled=False)
        latencies, cpu, items = [], [], []
        for q in asked[1:]:
            started = time.process_time()
            result = recall(q, "bench-0", args.budget, store=store, forgetting=OFF, reinforce_recalled=False)
            cpu.append((time.process_time() - started) * 1000)
            latencies.append(result.latency_ms)
            items.append(len(result.items))
        latencies.sort()
        print(json.dumps({
            "memories": store.count("memories"), "tenant_memories": store.count("memories", column_is("tenant", "bench-0")),
            "raw_events": store.count("raw_events"), "queries": len(latencies), "budget": args.budget,
            "generate_s": round(generate_s, 1), "index_s": round(index_s, 1), "indexes": built,
            "first_query_ms": round(first.latency_ms, 1),
            "p50_ms": round(statistics.median(latencies), 1),
            "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
            "max_ms": round(latencies[-1], 1), "cpu_p50_ms": round(statistics.median(cpu), 1),
            "load_avg_1m": round(os.getloadavg()[0], 1), "mean_items": round(statistics.mean(items), 1),
        }))


if __name__ == "__main__":
    main()
