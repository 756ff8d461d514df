"""The consumer-group member over the raw topics: decoded events in batches, manual commits, poison to the dead-letter topic.

It moves messages only; landing them is the stream job's (``pipelines.stream``).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

from kafka import ConsumerRebalanceListener, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, NoBrokersAvailable
from kafka.structs import OffsetAndMetadata

from memtape.connectors.kafka.admin import (
    DECODE_STAGE,
    DEFAULT_PARTITIONS,
    DEFAULT_PREFIX,
    DELIVERY_TIMEOUT_MS,
    MAX_POLL_RECORDS,
    POLL_TIMEOUT_MS,
    dead_letter_topic,
    ensure_topics,
    new_consumer,
    producer_settings,
    raw_topics,
)
from memtape.connectors.kafka_codec import CodecError, dead_letter_headers, decode_event
from memtape.errors import UserError
from memtape.schemas.records import RawEvent

log = logging.getLogger(__name__)
SESSION_TIMEOUT_MS = 10_000
METADATA_MAX_AGE_MS = 5000  # a group member sees topics (re)created after it joined this soon, not in kafka-python's 5 min



class Consumed(NamedTuple):
    """One decoded event and the message position it came from (a tuple: a frozen dataclass costs 4 us each)."""

    topic: str
    partition: int
    offset: int
    event: RawEvent


@dataclasses.dataclass
class Batch:
    """Decoded events of one poll; ``offsets`` are the next positions to commit, poison messages included."""

    events: list[Consumed]
    offsets: dict[TopicPartition, int]
    dead_lettered: int = 0


class _RevokeListener(ConsumerRebalanceListener):
    """Calls ``on_revoke`` inside ``poll`` before this member gives partitions up, so their work can finish first."""

    def __init__(self, on_revoke: Callable[[set[TopicPartition]], None]) -> None:
        self._on_revoke = on_revoke

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._on_revoke(set(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        pass


class RawEventConsumer:
    """A consumer-group member over the raw topics with manual commits.

    Poison messages (anything ``decode_event`` refuses) are copied to the
    dead-letter topic with the reason in headers before the batch is handed
    out, so committing ``Batch.offsets`` never skips an undocumented message.
    ``on_revoke`` runs, within ``poll``, before a rebalance takes partitions
    away: the place to finish and commit their work.
    """

    def __init__(self, bootstrap_servers: str, group: str, topics: Sequence[str] | None = None, *,
                 prefix: str = DEFAULT_PREFIX, partitions: int = DEFAULT_PARTITIONS,
                 options: Mapping[str, object] | None = None, max_poll_records: int = MAX_POLL_RECORDS,
                 session_timeout_ms: int = SESSION_TIMEOUT_MS,
                 on_revoke: Callable[[set[TopicPartition]], None] | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.options = dict(options or {})
        self.topics = list(topics or raw_topics(prefix))
        self.dead_letter_topic = dead_letter_topic(prefix)
        try:
            ensure_topics(bootstrap_servers, [*self.topics, self.dead_letter_topic], partitions, self.options)
            self._consumer = new_consumer(
                bootstrap_servers, self.options, group_id=group, auto_offset_reset="earliest",
                max_poll_records=max_poll_records, session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=session_timeout_ms // 5, metadata_max_age_ms=METADATA_MAX_AGE_MS,
            )
            self._consumer.subscribe(self.topics, listener=_RevokeListener(on_revoke) if on_revoke else None)
        except (KafkaError, NoBrokersAvailable) as exc:
            raise UserError(f"{bootstrap_servers}: cannot join consumer group {group!r}: {exc}") from exc
        self._dlq: KafkaProducer | None = None

    def poll(self, timeout_ms: int = POLL_TIMEOUT_MS) -> Batch | None:
        """One poll's worth of decoded events, or None when nothing arrived."""
        polled = self._consumer.poll(timeout_ms)
        if not polled:
            return None
        batch = Batch(events=[], offsets={})
        sends = []
        for tp, messages in polled.items():
            for m in messages:
                try:
                    batch.events.append(Consumed(m.topic, m.partition, m.offset, decode_event(m.value, m.headers)))
                except CodecError as exc:
                    sends.append(self._dead_letter(m, str(exc)))
            batch.offsets[tp] = messages[-1].offset + 1
        for future in sends:
            future.get(DELIVERY_TIMEOUT_MS / 1000)
        batch.dead_lettered = len(sends)
        return batch

    def batches(self, idle_stop_s: float | None = None) -> Iterator[Batch]:
        """Batches as they arrive; forever, or until nothing arrived for ``idle_stop_s`` seconds."""
        last = time.monotonic()
        while idle_stop_s is None or time.monotonic() - last < idle_stop_s:
            batch = self.poll()
            if batch is not None:
                last = time.monotonic()
                yield batch

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit next positions (``Batch.offsets``) once their events are durable downstream."""
        self._consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()})

    def assignment(self) -> set[TopicPartition]:
        """The partitions this member holds now (they move on a rebalance)."""
        return set(self._consumer.assignment())

    def close(self) -> None:
        self._consumer.close()
        if self._dlq is not None:
            self._dlq.close()

    def __enter__(self) -> RawEventConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _dead_letter(self, message, reason: str):
        if self._dlq is None:
            self._dlq = KafkaProducer(bootstrap_servers=self.bootstrap_servers, **producer_settings(), **self.options)
        headers = [*(message.headers or []),
                   *dead_letter_headers(reason, DECODE_STAGE, topic=message.topic, partition=message.partition,
                                        offset=message.offset)]
        log.warning("dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)
        return self._dlq.send(self.dead_letter_topic, key=message.key, value=message.value, headers=headers)
