"""Recall freshness: how long after publishing a message recall returns it, with the stream job's default settings.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_recall_freshness.py [--rate 20] [--seconds 120]
       [--idle-timeout 300] [--concurrent 10]
Validation size: ``--rate 10 --seconds 20``.

Starts the embedded broker (Tansu, memory storage) and one ``memtape stream``
process on a fresh temporary store, then publishes real lines of the shared
IRC logs at ``--rate`` (as ``bench_stream.py`` does), each carrying a unique
phrase of its own (``fresh<serial>``). A poller asks ``memtape.recall`` for the
phrases of every message not yet found, many phrases per query, and notes when
an item first cites each message. With the default idle timeout (300 s) no
episode closes while the benchmark runs, so every answer comes from working
memory: raw events that no memory holds yet. Prints one JSON line with
publish-to-recallable latency (median, p95, max; a message never found counts
as infinite, null in JSON; target p95 <= 5 s) and the recall calls' own latency.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream_common import (  # noqa: E402
    PREFIX, WARMUP_MESSAGES, Ledger, add_publishing_arguments, interleaved, irc_conversations, machine, rekeyed,
    start_stream, stopped_output, summary,
)

from memtape.connectors.kafka_broker import EmbeddedBroker  # noqa: E402
from memtape.connectors.kafka import Publisher  # noqa: E402
from memtape.connectors.lance_store import Store  # noqa: E402
from memtape.schemas.records import RawEvent  # noqa: E402

TARGET_P95_S = 5.0
PHRASES_PER_QUERY = 40


def tagged(events, phrases: dict[str, str]):
    """The events with a unique phrase appended to each text (``phrases``: event id -> phrase)."""
    for n, event in enumerate(events):
        phrase = f"fresh{n}"
        tagged_event = RawEvent(event.tenant, event.source_kind, event.source, event.source_id, f"{event.text} {phrase}",
                                event.event_time, conversation_id=event.conversation_id, sender=event.sender)
        phrases[tagged_event.event_id] = phrase
        yield tagged_event


class RecallPoller(threading.Thread):
    """Asks recall for the phrases of the messages not found yet; records when each was first cited."""

    def __init__(self, home: Path, ledger: Ledger, phrases: dict[str, str], tenant_of: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.home, self.ledger, self.phrases, self.tenant_of = home, ledger, phrases, tenant_of
        self.found: dict[str, float] = {}
        self.call_ms: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from memtape.errors import UserError
        from memtape.forgetting import OFF
        from memtape.recall import recall

        while not (self.home / "raw_events.lance").exists() and not self.stop.wait(0.2):
            pass
        store = Store(str(self.home))
        while not self.stop.is_set():
            pending = [e for e in list(self.ledger.published) if e not in self.found]
            if not pending:
                self.stop.wait(0.05)
                continue
            by_tenant: dict[str, list[str]] = {}
            for event_id in pending:
                by_tenant.setdefault(self.tenant_of[event_id], []).append(event_id)
            for tenant, ids in by_tenant.items():
                ids = ids[:PHRASES_PER_QUERY]
                query = " ".join(self.phrases[e] for e in ids)
                start = time.monotonic()
                try:
                    result = recall(query, tenant, 4000, store=store, forgetting=OFF, reinforce_recalled=False)
                except UserError:
                    continue
                now = time.monotonic()
                self.call_ms.append((now - start) * 1000)
                for item in result.items:
                    for event_id in item.raw_event_ids:
                        self.found.setdefault(event_id, now)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_publishing_arguments(parser, rate=20.0, seconds=120.0, idle_timeout=300.0, concurrent=10, drain=30.0,
                             drain_help="seconds to keep polling after publishing")
    args = parser.parse_args()
    runs = irc_conversations(args.data, args.conversation_messages)
    phrases: dict[str, str] = {}
    warmup = list(tagged(next(rekeyed([runs[0][:WARMUP_MESSAGES]], "warmup")), {}))
    events = tagged(interleaved(rekeyed(runs, "fresh"), args.concurrent), phrases)
    tenant_of: dict[str, str] = {}

    def remembered(stream):
        for event in stream:
            tenant_of[event.event_id] = event.tenant
            yield event

    with tempfile.TemporaryDirectory(prefix="bench-fresh-") as work, \
            EmbeddedBroker(log_path=Path(work) / "tansu.log") as broker, \
            Publisher(broker.bootstrap_servers, prefix=PREFIX) as publisher:
        home, stream_log = Path(work) / "home", Path(work) / "stream.log"
        stream = start_stream(home, broker.bootstrap_servers, args, stream_log)
        ledger = Ledger()
        poller = RecallPoller(home, ledger, phrases, tenant_of)
        try:
            publisher.publish(warmup)  # the job's start and model loads stay out of the measurement
            while not (home / "raw_events.lance").exists() or Store(str(home)).count("raw_events") < len(warmup):
                if stream.poll() is not None:
                    raise SystemExit(f"the stream job stopped; see {stream_log}:\n{stream_log.read_text()[-3000:]}")
                time.sleep(0.5)
            poller.start()
            report = publisher.publish(ledger.paced(remembered(events), args.rate, args.seconds))
            end = time.monotonic() + args.drain
            while time.monotonic() < end and len(poller.found.keys() & ledger.published.keys()) < len(ledger.published):
                time.sleep(0.2)
        finally:
            poller.stop.set()
            stream.terminate()
            stopped_output(stream)
    latency = [poller.found.get(i, math.inf) - t for i, t in ledger.published.items()]
    fresh = summary(latency)
    calls = sorted(poller.call_ms)
    result = {
        "benchmark": "recall_freshness", "rate": args.rate, "seconds": args.seconds, "idle_timeout_s": args.idle_timeout,
        "published": report.events,
        "recallable": {**fresh, "missing": sum(not math.isfinite(x) for x in latency)},
        "recall_calls": {"count": len(calls), "median_ms": round(calls[len(calls) // 2], 1) if calls else None,
                         "p95_ms": round(calls[math.ceil(0.95 * len(calls)) - 1], 1) if calls else None},
        "meets": {"p95_recallable": fresh["p95_s"] is not None and fresh["p95_s"] <= TARGET_P95_S},
        "machine": machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
