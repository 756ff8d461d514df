"""Exactly-once under crashes: kill -9 the streaming job at random moments during a long run, then check the store.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_stream_kill.py [--messages 50000] [--rate 200]
       [--kills 5] [--min-s 10] [--max-s 90] [--idle-timeout 10] [--seed 1] [--data ../shared/data]
Validation size: ``--messages 2000 --rate 100 --kills 2 --max-s 20``.

Starts the embedded broker (Tansu, memory storage) and publishes ``--messages``
real lines of the shared IRC logs (re-keyed with fresh ids, 20 conversations
interleaved, as ``bench_stream.py`` does) at ``--rate`` per second from a
thread (0: all of them before the job first starts). Meanwhile it runs
``memtape stream`` on a fresh store and sends it SIGKILL ``--kills`` times,
each at a moment drawn uniformly between ``--min-s`` and ``--max-s`` seconds
after that start (the job is then landing raw rows, deriving, or committing).
A last start runs until every message is in raw_events and in a closed
episode (as a member, or as a unit dedupe dropped) and the tables then stay
unchanged for the idle timeout + 5 s; then it is stopped with SIGTERM. Prints
one JSON line: the kill moments, and what the store holds: raw_events rows and
distinct source ids against the published ids, published ids in no episode,
and for episodes, triples, memories and entities the rows against their
distinct keys, plus raw events sitting in more than one episode or memory.
``exactly_once`` is true when nothing is missing and nothing is duplicated.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from stream_common import GROUP, PREFIX, SHARED, Ledger, interleaved, irc_conversations, machine, rekeyed

from memtape.connectors.kafka_broker import EmbeddedBroker
from memtape.connectors.kafka import Publisher
from memtape.connectors.lance_store import Store

KEYS = {"episodes": "episode_id", "triples": "triple_id", "memories": "memory_id", "entities": "entity_id"}


def start_stream(home: Path, bootstrap: str, idle_timeout: float, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MEMTAPE_HOME": str(home), "MEMTAPE_KAFKA_TOPIC_PREFIX": PREFIX, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "memtape", "stream", "--bootstrap-servers", bootstrap, "--group", GROUP, "--topic-prefix", PREFIX,
         "--idle-timeout", str(idle_timeout)],
        env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def publish(bootstrap: str, events: list, rate: float) -> None:
    """Publish ``events`` at ``rate`` per second (all at once when 0)."""
    with Publisher(bootstrap, prefix=PREFIX) as publisher:
        paced = Ledger().paced(iter(events), rate, len(events) / rate) if rate else events
        assert publisher.publish(paced).events == len(events)


def count(home: Path, table: str) -> int:
    return Store(str(home)).count(table) if (home / f"{table}.lance").exists() else 0


def claimed(home: Path) -> set[str]:
    """Raw event ids that some episode holds, as a member or as a unit dedupe dropped."""
    if not (home / "episodes.lance").exists():
        return set()
    table = Store(str(home)).read("episodes", columns=["member_ids", "dropped_ids"])
    return {i for column in ("member_ids", "dropped_ids") for ids in table.column(column).to_pylist() for i in ids or ()}


def settle(home: Path, published: set[str], quiet_s: float, alive: Any, timeout_s: float = 3600.0) -> bool:
    """Wait until every published event is in raw_events and in a closed episode, then for the tables to stay unchanged
    for ``quiet_s`` (the last run's memories and checkpoint land after its episodes)."""
    end, last, since = time.monotonic() + timeout_s, None, time.monotonic()
    while time.monotonic() < end and alive():
        now = tuple(count(home, t) for t in ("raw_events", *KEYS))
        derived = len(claimed(home) & published)
        print(f"\rraw {now[0]}/{len(published)}  in episodes {derived}  memories {now[3]}", end="", file=sys.stderr, flush=True)
        if now != last:
            last, since = now, time.monotonic()
        elif derived == len(published) and time.monotonic() - since >= quiet_s:
            print(file=sys.stderr)
            return True
        time.sleep(2.0)
    return False


def audit(home: Path, published: set[str]) -> dict[str, Any]:
    """Rows against distinct keys per table, and raw events claimed twice."""
    store = Store(str(home))
    raw = store.read("raw_events", columns=["event_id"]).column("event_id").to_pylist()
    report: dict[str, Any] = {"raw_events": {"rows": len(raw), "distinct": len(set(raw)), "published": len(published),
                                             "missing": len(published - set(raw)), "unexpected": len(set(raw) - published)},
                              "not_in_an_episode": len(published - claimed(home))}
    for table, key in KEYS.items():
        ids = store.read(table, columns=[key]).column(key).to_pylist()
        report[table] = {"rows": len(ids), "distinct": len(set(ids))}
    for table, column in (("episodes", "member_ids"), ("memories", "raw_event_ids")):
        claims = Counter(m for ids in store.read(table, columns=[column]).column(column).to_pylist() for m in ids or ())
        report[table]["raw_events_claimed_twice"] = sum(1 for n in claims.values() if n > 1)
    report["exactly_once"] = (report["raw_events"]["rows"] == len(published) and not report["raw_events"]["missing"]
                              and not report["not_in_an_episode"]
                              and all(report[t]["rows"] == report[t]["distinct"] for t in KEYS)
                              and not any(report[t]["raw_events_claimed_twice"] for t in ("episodes", "memories")))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=200.0, help="messages published per second during the run (0: all first)")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--min-s", type=float, default=10.0, help="earliest kill, seconds after a start")
    parser.add_argument("--max-s", type=float, default=90.0, help="latest kill, seconds after a start")
    parser.add_argument("--idle-timeout", type=float, default=10.0, help="the stream job's --idle-timeout")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", type=Path, default=SHARED)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    events = list(itertools.islice(interleaved(rekeyed(irc_conversations(args.data, 40), "kill"), 20), args.messages))
    published = {e.event_id for e in events}
    kills = []
    with tempfile.TemporaryDirectory(prefix="bench-kill-") as work, EmbeddedBroker(log_path=Path(work) / "tansu.log") as broker:
        home, log = Path(work) / "home", Path(work) / "stream.log"
        publishing = threading.Thread(target=publish, args=(broker.bootstrap_servers, events, args.rate), daemon=True)
        publishing.start()
        if not args.rate:
            publishing.join()
        started = time.monotonic()
        for _ in range(args.kills):
            stream = start_stream(home, broker.bootstrap_servers, args.idle_timeout, log)
            after = rng.uniform(args.min_s, args.max_s)
            time.sleep(after)
            stream.send_signal(signal.SIGKILL)
            stream.wait()
            kills.append({"after_s": round(after, 1), "raw_events": count(home, "raw_events"), "memories": count(home, "memories")})
            print(f"killed after {after:.1f} s: {kills[-1]}", file=sys.stderr)
        stream = start_stream(home, broker.bootstrap_servers, args.idle_timeout, log)
        publishing.join()
        settled = settle(home, published, args.idle_timeout + 5, lambda: stream.poll() is None)
        stream.send_signal(signal.SIGTERM)
        stream.wait(timeout=300)
        result = {"benchmark": "stream_kill", "messages": len(events), "rate": args.rate, "kills": kills, "settled": settled,
                  "final_exit_code": stream.returncode, "wall_s": round(time.monotonic() - started, 1),
                  **audit(home, published), "machine": machine()}
        if not settled:
            result["stream_log_tail"] = log.read_text(errors="replace")[-2000:]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
