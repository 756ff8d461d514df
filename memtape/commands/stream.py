"""``memtape stream``: the continuous job from Kafka raw topics to every table."""
from __future__ import annotations

import json
import math
import signal
import sys
import time

import click

from memtape.commands._common import home_option, open_store

PROGRESS_EVERY_S = 30.0  # how often a job without a terminal writes its counters to stderr


@click.command()
@click.option("--bootstrap-servers", envvar="MEMTAPE_KAFKA_BOOTSTRAP_SERVERS", required=True,
              help="Kafka bootstrap servers HOST:PORT[,HOST:PORT] [env MEMTAPE_KAFKA_BOOTSTRAP_SERVERS].")
@click.option("--group", default="memtape-stream", show_default=True, help="Consumer group: processes in one group split the partitions.")
@click.option("--topic-prefix", default=None, help="Topic prefix (default from config: memtape).")
@click.option("--max-seconds", type=click.FloatRange(min=0), default=None, help="Stop after this many seconds (default: run until SIGINT/SIGTERM).")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="Seconds without a new message after which a conversation's open episode closes into a memory.")
@click.option("--batch-wait", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds to gather messages before landing their raw rows: the raw rows' latency. "
                   "Derivation takes everything landed and waiting at each micro-batch.")
@click.option("--runner", default="DirectRunner", show_default=True, help="Beam runner for each micro-batch.")
@home_option
def command(bootstrap_servers: str, group: str, topic_prefix: str | None, max_seconds: float | None, idle_timeout: float,
            batch_wait: float, runner: str, home: str | None) -> None:
    """Consume memtape.raw.* with a consumer group and land raw_events, episodes, triples and memories.

    Offsets are committed to Kafka only after the rows are durable in Lance, and each partition's
    position is stored with the data, so a restart resumes exactly where the store ends.
    """
    from memtape.config import load_config
    from memtape.connectors.kafka import client_options
    from memtape.pipelines.runner import pipeline_options
    from memtape.pipelines.stream import StreamSettings, run_stream

    cfg = load_config()
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    settings = StreamSettings(bootstrap_servers, group, topic_prefix or cfg.kafka.topic_prefix, client_options(cfg.kafka),
                              max_seconds, idle_timeout, batch_wait)

    shown_at = -math.inf

    def progress(stats) -> None:
        nonlocal shown_at
        line = (f"batches {stats.batches}  events {stats.events}  episodes flushed {stats.flushed}  "
                f"deriving {stats.derive_s:.0f} s")
        if sys.stderr.isatty():
            click.echo(f"\r{line}", nl=False, err=True)
        elif time.monotonic() - shown_at >= PROGRESS_EVERY_S:  # a job under a supervisor logs a line now and then
            shown_at = time.monotonic()
            click.echo(f"memtape stream: {line}", err=True)

    stats = run_stream(open_store(home), settings, pipeline_options(runner), lambda: bool(stopping), progress)
    click.echo(json.dumps(stats.__dict__))
