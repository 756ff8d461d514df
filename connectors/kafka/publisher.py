"""The publisher: records of sources onto the raw topics, at least once, verified against what the broker holds.

Records are keyed by tenant + conversation, so one conversation stays in one
partition and in order. A pass is done only when the broker still holds what
it acknowledged; otherwise the (re-readable) input is replayed. Ids are
content-derived, so the sink dedupes replays by ``event_id``.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import time
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Mapping

from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError, NoBrokersAvailable

from memtape.connectors.base import SOURCE_KINDS, Record, read_source
from memtape.connectors.kafka.admin import (
    DEFAULT_PARTITIONS,
    DEFAULT_PREFIX,
    DELIVERY_TIMEOUT_MS,
    POLL_TIMEOUT_MS,
    STALL_S,
    VERIFY_TIMEOUT_S,
    close_producer,
    dead_letter_topic,
    ensure_topics,
    new_consumer,
    producer_settings,
    raw_topic,
    when_up,
)
from memtape.connectors.kafka_codec import DEFAULT_MAX_MESSAGE_BYTES, CodecError, encode_dead_letter, encode_event, event_key
from memtape.errors import UserError
from memtape.schemas.records import DeadLetter, RawEvent

log = logging.getLogger(__name__)
MAX_IN_FLIGHT_RECORDS = 20_000  # unacknowledged records held before the publisher waits for acks
MAX_IN_FLIGHT_BYTES = 32 * 1024 * 1024
SETTLE_CHUNK = 1000  # acks read in runs of this many once the bound is reached, not one per record sent
MAX_REPLAYS = 3
CLOSE_TIMEOUT_S = 10.0
PROGRESS_EVERY = 500
ENCODE_STAGE = "kafka-encode"


@dataclasses.dataclass
class PublishReport:
    """What the last complete pass delivered, and how many passes the broker's losses forced."""

    events: int = 0
    dead_letters: int = 0
    replays: int = 0
    by_topic: collections.Counter = dataclasses.field(default_factory=collections.Counter)


@dataclasses.dataclass(frozen=True)
class SourceRecords:
    """The records of source URIs, re-read on every iteration so a replay holds nothing in memory."""

    uris: tuple[str, ...]
    tenant: str
    since: datetime | None = None

    def __iter__(self) -> Iterator[Record]:
        for uri in self.uris:
            yield from read_source(uri, self.tenant, self.since)


class _LogLost(Exception):
    """The broker no longer holds (or never took) records this pass sent."""


_Tip = tuple[int, "bytes | None", int]  # last acknowledged (offset, key, timestamp) of a partition


class Publisher:
    """Sends records to their family topics with at-least-once delivery and bounded memory.

    At most ``max_in_flight`` records (and ``MAX_IN_FLIGHT_BYTES``) wait for acks.
    """

    def __init__(self, bootstrap_servers: str, *, prefix: str = DEFAULT_PREFIX, partitions: int = DEFAULT_PARTITIONS,
                 max_in_flight: int = MAX_IN_FLIGHT_RECORDS, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 options: Mapping[str, object] | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.prefix = prefix
        self.partitions = partitions
        self.max_in_flight = max_in_flight
        self.max_message_bytes = max_message_bytes
        self.options = dict(options or {})
        self._topics: set[str] = set()
        self._producer = self._new_producer()

    def _new_producer(self) -> KafkaProducer:
        try:
            return KafkaProducer(bootstrap_servers=self.bootstrap_servers, **producer_settings(self.max_message_bytes),
                                 **self.options)
        except NoBrokersAvailable as exc:
            raise UserError(f"{self.bootstrap_servers}: no Kafka broker answers (start one with `memtape broker`)") from exc

    def publish(self, records: Iterable[Record], progress: Callable[[int], None] | None = None) -> PublishReport:
        """Send every record; return once the broker holds all of them.

        If the broker lost acknowledged records (a memory-only broker restarted,
        a topic deleted) the whole input is sent again, which needs a
        re-iterable ``records`` such as ``SourceRecords``; a one-shot iterator
        raises ``UserError`` instead of silently losing data.
        """
        replays = 0
        while True:
            try:
                report = self._publish_once(records, progress)
                report.replays = replays
                return report
            except _LogLost as lost:
                if iter(records) is records:
                    raise UserError(f"{lost}; the input is a one-shot iterator, so it cannot be sent again") from None
                if replays >= MAX_REPLAYS:
                    raise UserError(f"{lost}; gave up after {MAX_REPLAYS} replays") from None
                replays += 1
                log.warning("%s: sending the input again (replay %d of at most %d)", lost, replays, MAX_REPLAYS)
                close_producer(self._producer, 0)  # drop what is still buffered: the replay sends it in order
                self._producer = when_up(self._new_producer, self.bootstrap_servers)
                when_up(lambda: self._ensure(sorted(self._topics)), self.bootstrap_servers)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Close the producer; after ``publish`` returned nothing is left to flush, so this is quick."""
        close_producer(self._producer, timeout_s)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(0 if exc_type is not None else CLOSE_TIMEOUT_S)

    def _publish_once(self, records: Iterable[Record], progress: Callable[[int], None] | None) -> PublishReport:
        report = PublishReport()
        pending: collections.deque[tuple[Any, bytes | None]] = collections.deque()
        pending_bytes = 0
        tips: dict[TopicPartition, _Tip] = {}
        unreported = 0
        dlq = dead_letter_topic(self.prefix)
        topic_of = {kind: raw_topic(kind, self.prefix) for kind in SOURCE_KINDS}
        sent: collections.Counter = collections.Counter()
        for record in records:
            if isinstance(record, RawEvent):
                topic, key = topic_of.get(record.source_kind) or raw_topic(record.source_kind, self.prefix), event_key(record)
                try:
                    value, headers = encode_event(record, self.max_message_bytes)
                except CodecError as exc:
                    record = DeadLetter(record.tenant, record.source, ENCODE_STAGE, str(exc), position=record.source_id,
                                        source_uri=record.source_uri, raw=(record.payload or record.text or "").encode())
            if isinstance(record, DeadLetter):
                topic = dlq
                key, value, headers = encode_dead_letter(record)
            sent[topic] += 1
            if topic not in self._topics:
                self._ensure([topic])
            pending.append((self._send(topic, key, value, headers), key))
            pending_bytes += len(value)
            if len(pending) > self.max_in_flight or pending_bytes > MAX_IN_FLIGHT_BYTES:
                keep = max(self.max_in_flight - SETTLE_CHUNK, 0)
                while pending and (len(pending) > keep or pending_bytes > MAX_IN_FLIGHT_BYTES):
                    pending_bytes -= self._settle(*pending.popleft(), tips)
            if progress is not None:
                unreported += 1
                if unreported >= PROGRESS_EVERY:
                    progress(unreported)
                    unreported = 0
        self._producer.flush()
        while pending:
            self._settle(*pending.popleft(), tips)
        if progress is not None and unreported:
            progress(unreported)
        self._verify(tips)
        report.by_topic.update(sent)
        report.dead_letters = sent[dlq]
        report.events = sum(sent.values()) - report.dead_letters
        return report

    def _send(self, topic: str, key: bytes, value: bytes, headers: list):
        """Queue one record; while the topic's metadata is missing (broker away or emptied) heal and retry."""
        try:
            return self._producer.send(topic, key=key, value=value, headers=headers)
        except KafkaTimeoutError:
            pass
        deadline = time.monotonic() + DELIVERY_TIMEOUT_MS / 1000
        while True:
            self._heal()
            try:
                return self._producer.send(topic, key=key, value=value, headers=headers)
            except KafkaTimeoutError:
                if time.monotonic() > deadline:
                    raise UserError(f"{self.bootstrap_servers}: no metadata for {topic} within "
                                    f"{DELIVERY_TIMEOUT_MS // 1000} s; is the broker up?") from None

    def _settle(self, future, key: bytes | None, tips: dict[TopicPartition, _Tip]) -> int:
        """Wait for one ack, healing the broker's topics while it stalls; the acked value's size."""
        while True:
            try:
                meta = future.get(STALL_S)
                break
            except KafkaTimeoutError:
                if future.is_done:
                    raise _LogLost(f"a record was not acknowledged within {DELIVERY_TIMEOUT_MS // 1000} s") from None
                self._heal()
            except KafkaError as exc:
                raise _LogLost(f"a send failed ({type(exc).__name__}: {exc})") from None
        tp = meta.topic_partition
        previous = tips.get(tp)
        if previous is not None and meta.offset <= previous[0]:
            raise _LogLost(f"{tp.topic}[{tp.partition}] offsets went back from {previous[0]} to {meta.offset}: "
                           "the broker lost acknowledged records")
        tips[tp] = (meta.offset, key, meta.timestamp)
        return meta.serialized_value_size

    def _ensure(self, topics: Iterable[str]) -> None:
        topics = list(topics)
        try:
            ensure_topics(self.bootstrap_servers, topics, self.partitions, self.options)
        except (KafkaError, NoBrokersAvailable) as exc:
            raise UserError(f"{self.bootstrap_servers}: cannot create topics {topics}: {exc}") from exc
        self._topics.update(topics)

    def _heal(self) -> None:
        """While acks stall: quiet if the broker is away, ``_LogLost`` if it came back without this pass's topics.

        Raising before the topics are recreated keeps the producer's buffered
        records from landing ahead of the replay, so conversations stay in order.
        """
        try:
            consumer = new_consumer(self.bootstrap_servers, self.options)
            try:
                present = consumer.topics()
            finally:
                consumer.close()
        except (UserError, KafkaError) as exc:
            log.info("broker %s not answering (%s); waiting", self.bootstrap_servers, type(exc).__name__)
            return
        missing = sorted(self._topics - present)
        if missing:
            raise _LogLost(f"topics {', '.join(missing)} vanished: the broker lost acknowledged records")

    def _verify(self, tips: Mapping[TopicPartition, _Tip]) -> None:
        """Read back the last acknowledged record of every partition: it proves the broker still holds the pass."""
        if not tips:
            return
        try:
            consumer = when_up(lambda: new_consumer(self.bootstrap_servers, self.options), self.bootstrap_servers,
                                VERIFY_TIMEOUT_S)
        except UserError as exc:
            raise _LogLost(f"cannot read back what the broker acknowledged ({exc})") from None
        try:
            for tp in tips:
                if tp.partition not in (consumer.partitions_for_topic(tp.topic) or ()):
                    raise _LogLost(f"{tp.topic}[{tp.partition}] no longer exists: the broker lost acknowledged records")
            consumer.assign(list(tips))
            for tp, tip in tips.items():
                consumer.seek(tp, tip[0])
            unseen = set(tips)
            deadline = time.monotonic() + VERIFY_TIMEOUT_S
            while unseen and time.monotonic() < deadline:
                for tp, messages in consumer.poll(POLL_TIMEOUT_MS).items():
                    if tp not in unseen or not messages:
                        continue
                    got, tip = messages[0], tips[tp]
                    if (got.offset, got.key, got.timestamp) != tip:
                        raise _LogLost(f"{tp.topic}[{tp.partition}] offset {tip[0]} holds another record: "
                                       "the broker lost acknowledged records")
                    unseen.discard(tp)
                    consumer.pause(tp)
                for tp in list(unseen):
                    highwater = consumer.highwater(tp)
                    if highwater is not None and highwater <= tips[tp][0]:
                        raise _LogLost(f"{tp.topic}[{tp.partition}] ends at {highwater}, before acknowledged offset "
                                       f"{tips[tp][0]}: the broker lost acknowledged records")
            if unseen:
                raise _LogLost(f"could not read back {len(unseen)} partitions within {VERIFY_TIMEOUT_S:.0f} s")
        finally:
            consumer.close()


def publish_records(records: Iterable[Record], bootstrap_servers: str, *, prefix: str = DEFAULT_PREFIX,
                    partitions: int = DEFAULT_PARTITIONS, options: Mapping[str, object] | None = None,
                    progress: Callable[[int], None] | None = None) -> PublishReport:
    """Publish ``records`` through a short-lived ``Publisher`` (see ``Publisher.publish``)."""
    with Publisher(bootstrap_servers, prefix=prefix, partitions=partitions, options=options) as publisher:
        return publisher.publish(records, progress)
