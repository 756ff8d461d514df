"""What the streaming benchmarks share: the shared IRC logs as endless live conversations, paced publishing, the job.

``bench_stream.py``, ``bench_recall_freshness.py`` and ``bench_stream_kill.py``
publish real lines of the shared IRC logs, re-keyed with fresh ids and
``event_time`` = publish time, to one ``memtape stream`` job on the embedded
broker, and report latencies the same way; this module holds those parts
and the command-line options they have in common. It measures nothing itself.
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from memtape.connectors.base import read_source
from memtape.transforms.segment_episodes import conversation_key
from memtape.schemas.records import RawEvent

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PREFIX = "bench"
GROUP = "bench"
WARMUP_MESSAGES = 20  # the first conversation, published and awaited before the measurement


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


def stopped_output(stream: subprocess.Popen) -> str:
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


def add_publishing_arguments(parser: argparse.ArgumentParser, rate: float, seconds: float, idle_timeout: float,
                             concurrent: int, drain: float, drain_help: str) -> None:
    """The options every latency benchmark takes: what is published, how fast, and the job's two settings."""
    parser.add_argument("--rate", type=float, default=rate, help="messages published per second")
    parser.add_argument("--seconds", type=float, default=seconds, help="how long to publish")
    parser.add_argument("--idle-timeout", type=float, default=idle_timeout, help="the stream job's --idle-timeout")
    parser.add_argument("--batch-wait", type=float, default=1.0, help="the stream job's --batch-wait (its default)")
    parser.add_argument("--concurrent", type=int, default=concurrent, help="conversations open at once")
    parser.add_argument("--conversation-messages", type=int, default=40, help="messages per conversation")
    parser.add_argument("--drain", type=float, default=drain, help=drain_help)
    parser.add_argument("--data", type=Path, default=SHARED, help="the shared data folder (its im/irc logs are published)")
