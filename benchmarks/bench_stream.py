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
message's publish to a memory holding it, minus the idle timeout (target <= 5 s).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from memtape.connectors.base import read_source
from memtape.connectors.kafka_broker import EmbeddedBroker
from memtape.connectors.kafka_io import Publisher
from memtape.connectors.lance_store import Store
from memtape.transforms.segment_episodes import conversation_key
from memtape.schemas.records import RawEvent

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PREFIX = "bench"
GROUP = "bench"
TARGET_P95_S = 5.0
TARGET_MEMORY_AFTER_IDLE_S = 5.0
WARMUP_MESSAGES = 20


def irc_conversations(data: Path, length: int) -> list[list[RawEvent]]:
    """Runs of ``length`` consecutive events of each shared IRC log (the folder also holds annotation files)."""
    runs = []
    for log in sorted((data / "im" / "irc").glob("*.ascii.txt")):
        events = [r for r in read_source(f"irc:{log}", "x") if isinstance(r, RawEvent) and r.text]
        runs += [events[i:i + length] for i in range(0, len(events) - length + 1, length)]
    return runs


def rekeyed(runs: list[list[RawEvent]], tenant: str) -> Iterator[list[RawEvent]]:
    """Endless conversations from ``runs``: every pass over them is a new tenant, every message a new id."""
    serial = itertools.count()
    for cycle in itertools.count():
        for n, run in enumerate(runs):
            yield [RawEvent(f"{tenant}{cycle}", "im", "bench-stream", str(next(serial)), e.text, datetime.now(timezone.utc),
                            conversation_id=f"conv{n}", sender=e.sender) for e in run]


def interleaved(conversations: Iterator[list[RawEvent]], concurrent: int) -> Iterator[RawEvent]:
    """Messages of ``concurrent`` open conversations in turn; an ended conversation is replaced by the next."""
    slots = [iter(next(conversations)) for _ in range(concurrent)]
    while True:
        for i, slot in enumerate(slots):
            event = next(slot, None)
            if event is None:
                slots[i] = iter(next(conversations))
                event = next(slots[i])
            yield event


class Ledger:
    """Publish times by event id, and the last event id of each conversation."""

    def __init__(self) -> None:
        self.published: dict[str, float] = {}
        self.last_of: dict[str, str] = {}

    def paced(self, events: Iterator[RawEvent], rate: float, seconds: float) -> Iterator[RawEvent]:
        """Yield events at ``rate`` per second for ``seconds``, stamping each with its publish time."""
        start = time.monotonic()
        for n in itertools.count():
            due = start + n / rate
            if due - start >= seconds:
                return
            time.sleep(max(0.0, due - time.monotonic()))
            event = next(events)
            event.event_time = datetime.now(timezone.utc)
            row_id = event.event_id
            self.published[row_id] = time.monotonic()
            self.last_of[conversation_key({"tenant": event.tenant, "conversation_id": event.conversation_id})] = row_id
            yield event


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


def summary(latencies: list[float]) -> dict[str, float | None]:
    """Median, nearest-rank p95 and max in seconds; an infinite latency (never seen) reads as null."""
    if not latencies:
        return {"median_s": None, "p95_s": None, "max_s": None}
    ordered = sorted(latencies)
    value = lambda x: round(x, 3) if math.isfinite(x) else None  # noqa: E731
    return {"median_s": value(statistics.median(ordered)), "p95_s": value(ordered[math.ceil(0.95 * len(ordered)) - 1]),
            "max_s": value(ordered[-1])}


def start_stream(home: Path, bootstrap: str, args: argparse.Namespace, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MEMTAPE_HOME": str(home), "MEMTAPE_KAFKA_TOPIC_PREFIX": PREFIX, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "memtape", "stream", "--bootstrap-servers", bootstrap, "--group", GROUP, "--topic-prefix", PREFIX,
         "--idle-timeout", str(args.idle_timeout), "--batch-wait", str(args.batch_wait)],
        env=env, stdout=subprocess.PIPE, stderr=log.open("wb"), text=True)  # the child keeps the log open


def _stopped_output(stream: subprocess.Popen) -> str:
    """The job's stdout after SIGTERM (its final stats line), killing it if it does not stop within 2 minutes."""
    try:
        return stream.communicate(timeout=120)[0]
    except subprocess.TimeoutExpired:
        stream.kill()
        return stream.communicate()[0]


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?")
    return {"cores": os.cpu_count(), "cpu_model": model, "loadavg_1m": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="messages published per second")
    parser.add_argument("--seconds", type=float, default=300.0, help="how long to publish")
    parser.add_argument("--idle-timeout", type=float, default=30.0, help="the stream job's --idle-timeout")
    parser.add_argument("--batch-wait", type=float, default=1.0, help="the stream job's --batch-wait")
    parser.add_argument("--concurrent", type=int, default=20, help="conversations open at once")
    parser.add_argument("--conversation-messages", type=int, default=40, help="messages per conversation")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between store polls")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds past the idle timeout to wait after publishing")
    parser.add_argument("--processes", type=int, default=1, help="memtape stream processes in the one consumer group")
    parser.add_argument("--data", type=Path, default=SHARED)
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
            outs = [_stopped_output(stream) for stream in streams]
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
        "machine": machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
