"""Streaming latency: messages published at a steady rate until each is queryable, and memories after idle.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_stream.py [--rate 200] [--seconds 300]
       [--idle-timeout 30] [--batch-wait 1.0] [--concurrent 20] [--conversation-messages 40] [--processes 1]
Validation size: ``--rate 50 --seconds 30 --idle-timeout 10``.

Starts the embedded broker (Tansu, memory storage) and ``--processes``
``memtape stream`` subprocesses in one consumer group on a fresh temporary store, then publishes real lines of the shared
IRC logs, re-keyed with fresh ids and ``event_time`` = publish time, through
memtape's ``Publisher``: ``--concurrent`` conversations at a time take turns,
each ``--conversation-messages`` consecutive lines of one log long, and a new
one starts when one ends (each pass over the logs is a new tenant, so dedupe
sees no repeats). A warm-up conversation first waits for its rows and its
memory, so the job's start and model loads stay out of the measurement.
Another thread polls the store every ``--poll`` seconds: the ``event_id`` of
``raw_events`` fragments it has not read yet, and the ``raw_event_ids`` of
``memories``. Prints one JSON line: publish-to-queryable latency (median, p95,
max; a message never seen counts as infinite, null in JSON, target p95 <= 5 s),
the achieved publish rate, and per conversation the time from its last
message's publish to a memory holding it, minus the idle timeout (target <= 5 s),
and the job's counters (the last progress line it logged as well, for a job that
was still inside a micro-batch when stopped and had to be killed).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream_common import (  # noqa: E402
    PREFIX, WARMUP_MESSAGES, Ledger, add_publishing_arguments, interleaved, irc_conversations, machine, rekeyed,
    start_stream, stopped_output, summary,
)

from memtape.connectors.kafka_broker import EmbeddedBroker  # noqa: E402
from memtape.connectors.kafka import Publisher  # noqa: E402
from memtape.connectors.lance_store import Store  # noqa: E402

TARGET_P95_S = 5.0
TARGET_MEMORY_AFTER_IDLE_S = 5.0


class Poller(threading.Thread):
    """Records when each raw event id first became queryable, and when it first sat in a memory."""

    def __init__(self, home: Path, every: float) -> None:
        super().__init__(daemon=True)
        self.home, self.every = home, every
        self.queryable: dict[str, float] = {}
        self.in_memory: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        store, read = Store(str(self.home)), set[tuple[str, int]]()
        while not self.stop.wait(self.every):
            now = time.monotonic()
            for event_id in self._new_values(store, read, "raw_events", "event_id"):
                self.queryable.setdefault(event_id, now)
            for ids in self._new_values(store, read, "memories", "raw_event_ids"):
                for event_id in ids or ():
                    self.in_memory.setdefault(event_id, now)

    def _new_values(self, store: Store, read: set[tuple[str, int]], table: str, column: str) -> list[Any]:
        """``column`` of the fragments of ``table`` not read yet.

        Lance never rewrites a fragment's rows in place: an inserted or updated
        row lands in a new fragment (ids only grow), so old fragments hold
        nothing this poll has not seen.
        """
        if not (self.home / f"{table}.lance").exists():  # the stream job creates its tables; never race it
            return []
        values = []
        for fragment in store.dataset(table).get_fragments():
            if (table, fragment.fragment_id) not in read:
                read.add((table, fragment.fragment_id))
                values += fragment.to_table(columns=[column]).column(column).to_pylist()
        return values

    def wait_for(self, ids: set[str], memory_ids: set[str], timeout: float, alive: Callable[[], bool]) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and alive():
            if ids <= self.queryable.keys() and memory_ids <= self.in_memory.keys():
                return True
            time.sleep(self.every)
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_publishing_arguments(parser, rate=200.0, seconds=300.0, idle_timeout=30.0, concurrent=20, drain=60.0,
                             drain_help="seconds past the idle timeout to wait after publishing")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between store polls")
    parser.add_argument("--processes", type=int, default=1, help="memtape stream processes in the one consumer group")
    args = parser.parse_args()
    runs = irc_conversations(args.data, args.conversation_messages)
    warmup = next(rekeyed([runs[0][:WARMUP_MESSAGES]], "warmup"))
    events = interleaved(rekeyed(runs, "bench"), args.concurrent)
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as work, \
            EmbeddedBroker(log_path=Path(work) / "tansu.log") as broker, \
            Publisher(broker.bootstrap_servers, prefix=PREFIX) as publisher:
        home, stream_log = Path(work) / "home", Path(work) / "stream.log"
        streams = [start_stream(home, broker.bootstrap_servers, args, stream_log) for _ in range(args.processes)]
        poller = Poller(home, args.poll)
        poller.start()
        try:
            started = time.monotonic()
            warm_ids = {e.event_id for e in warmup}
            publisher.publish(warmup)
            alive = lambda: all(stream.poll() is None for stream in streams)  # noqa: E731
            if not poller.wait_for(warm_ids, {warmup[-1].event_id}, args.idle_timeout + 300, alive):
                raise SystemExit(f"warm-up did not land; see {stream_log}:\n{stream_log.read_text()[-3000:]}")
            warmup_s = time.monotonic() - started
            ledger = Ledger()
            report = publisher.publish(ledger.paced(events, args.rate, args.seconds))
            first, last = min(ledger.published.values()), max(ledger.published.values())
            drained = poller.wait_for(set(ledger.published), set(ledger.last_of.values()), args.idle_timeout + args.drain, alive)
        finally:
            poller.stop.set()
            for stream in streams:
                stream.terminate()
            outs = [stopped_output(stream) for stream in streams]
            progress = [ln for ln in stream_log.read_text(errors="replace").splitlines() if ln.startswith("memtape stream:")]
    latency = [poller.queryable.get(i, math.inf) - t for i, t in ledger.published.items()]
    memory = [poller.in_memory.get(i, math.inf) - ledger.published[i] - args.idle_timeout for i in ledger.last_of.values()]
    queryable, after_idle = summary(latency), summary(memory)
    result = {
        "benchmark": "stream", "rate": args.rate, "seconds": args.seconds, "idle_timeout_s": args.idle_timeout,
        "batch_wait_s": args.batch_wait, "concurrent": args.concurrent, "conversation_messages": args.conversation_messages,
        "published": report.events, "achieved_rate": round(report.events / max(last - first, 1e-9), 1),
        "warmup_s": round(warmup_s, 1), "drained": drained,
        "queryable": {**queryable, "missing": sum(not math.isfinite(x) for x in latency)},
        "memory_after_idle": {"conversations": len(memory), **after_idle, "missing": sum(not math.isfinite(x) for x in memory)},
        "meets": {"p95_queryable": queryable["p95_s"] is not None and queryable["p95_s"] <= TARGET_P95_S,
                  "memory_after_idle": after_idle["max_s"] is not None and after_idle["max_s"] <= TARGET_MEMORY_AFTER_IDLE_S},
        "processes": args.processes,
        "stream_stats": [json.loads(out.strip().splitlines()[-1]) if out.strip() else None for out in outs],
        "last_progress": progress[-1] if progress else None,  # the job's own counters, logged every 30 s, even if it was killed
        "machine": machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
