"""Session-scoped embedded Kafka broker (Tansu, memory storage) for integration tests.

One broker per pytest session on a free port; tests isolate themselves with
their own topic prefix. ``restart_broker`` stops a broker, keeps it away for a
while and starts it again on the same port: with memory storage that also
wipes every topic, so fault tests use a ``private_kafka_broker`` of their own.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from memtape.connectors.kafka_broker import EmbeddedBroker


def restart_broker(broker: EmbeddedBroker, down_s: float) -> None:
    """Stop ``broker``, stay down ``down_s`` seconds, start it again on the same port (empty: memory storage)."""
    broker.stop()
    time.sleep(down_s)
    broker.start()


@pytest.fixture(scope="session")
def kafka_broker_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """The session's broker process, for tests that need more than its address."""
    log_path = Path(tmp_path_factory.mktemp("kafka")) / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_broker(kafka_broker_process: EmbeddedBroker) -> str:
    """``127.0.0.1:PORT`` of the session's embedded broker."""
    return kafka_broker_process.bootstrap_servers


@pytest.fixture
def private_kafka_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of the test's own, so restarting it cannot wipe other tests' topics."""
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        yield broker
