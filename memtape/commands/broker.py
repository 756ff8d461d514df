"""``memtape broker``: run the embedded Kafka-compatible broker (Tansu) in the foreground.

It parses options and hands over to ``memtape.connectors.kafka_broker``; it
never produces or consumes. The broker keeps everything in memory.
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from memtape.errors import UserError

_DEFAULT_PORT = 9092


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=_DEFAULT_PORT, show_default=True, help="TCP port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on and advertise.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the broker log (tansu.log). Messages are never stored there: memory storage only.")
def command(port: int, host: str, data_dir: Path | None) -> None:
    """Run an embedded Kafka-compatible broker until Ctrl-C or SIGTERM.

    MEMORY STORAGE ONLY: stopping or restarting it loses every topic and
    message. Use it for demos, tests and laptops; point --bootstrap-servers
    at a real Kafka cluster for anything that must survive a restart.
    """
    from memtape.connectors.kafka_broker import MEMORY_WARNING, EmbeddedBroker

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    broker = EmbeddedBroker(port, host, log_path=data_dir / "tansu.log" if data_dir else None)
    broker.start()
    click.echo(f"memtape broker: Kafka protocol on {broker.bootstrap_servers}; {MEMORY_WARNING}. Ctrl-C stops it.", err=True)
    try:
        while not stop.is_set() and broker.running:
            stop.wait(0.5)
        crashed = not stop.is_set()
    finally:
        broker.stop()
    if crashed:
        raise UserError(f"broker on {host}:{port} exited on its own" + (f" (see {data_dir / 'tansu.log'})" if data_dir else ""))
    click.echo("memtape broker: stopped; its topics are gone (memory storage)", err=True)
