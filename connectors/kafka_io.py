"""Kafka transport: topics, the publisher, the consumer group and bounded topic reads.

Records go to one topic per source family (``<prefix>.raw.im|email|meeting|health``)
keyed by tenant + conversation, so one conversation stays in one partition and
in order; anything a stage cannot handle goes to ``<prefix>.deadletter`` with
the reason in headers. Delivery is at least once: the publisher treats a pass
as done only when the broker still holds what it acknowledged, and replays the
(re-readable) input otherwise; ids are content-derived, so the sink dedupes
replays by ``event_id``. This module moves messages only; it never parses
sources (``memtape.connectors.base``) or lands rows (the sink).
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import time
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence, TypeVar
from urllib.parse import parse_qs, urlsplit

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError, NoBrokersAvailable, TopicAlreadyExistsError
from kafka.partitioner.default import murmur2
from kafka.structs import OffsetAndMetadata

from memtape.config import KafkaConfig
from memtape.connectors.base import SOURCE_KINDS, Record, read_source
from memtape.connectors.kafka_codec import (
    DEAD_LETTER_REASON, DEFAULT_MAX_MESSAGE_BYTES, CodecError, dead_letter_headers, decode_dead_letter, decode_event,
    encode_dead_letter, encode_event, event_key,
)
from memtape.errors import UserError
from memtape.schemas.records import DeadLetter, RawEvent

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_PREFIX = "memtape"
DEFAULT_PARTITIONS = 6
REPLICATION_FACTOR = -1  # the cluster's default.replication.factor (KIP-464); Tansu accepts it too
MAX_IN_FLIGHT_RECORDS = 20_000  # unacknowledged records held before the publisher waits for acks
MAX_IN_FLIGHT_BYTES = 32 * 1024 * 1024
SETTLE_CHUNK = 1000  # acks read in runs of this many once the bound is reached, not one per record sent
DELIVERY_TIMEOUT_MS = 300_000  # a broker may be away this long (a 30 s outage with ample margin)
STALL_S = 2.0  # an ack this late: check whether the broker is away (wait) or came back empty (replay)
MAX_REPLAYS = 3
CLOSE_TIMEOUT_S = 10.0
VERIFY_TIMEOUT_S = 30.0
LINGER_MS = 50  # throughput over latency: publish is bulk; a 50 ms wait is invisible next to the pipeline
BATCH_BYTES = 512 * 1024  # well under the brokers' default message.max.bytes (1 MiB), which caps a batch
# Batches are gzipped: kafka-python checksums every batch (CRC32C) in pure Python unless the optional
# ``crc32c`` package is installed, at about 0.5 us a byte here, and it checksums the compressed bytes.
# JSON rows of chat lines shrink about 5x, zlib runs in C, and every Kafka broker (Tansu too) accepts it.
COMPRESSION = "gzip"
RECONNECT_BACKOFF_MAX_MS = 1000
PARTITION_CACHE_KEYS = 65_536  # conversations whose key hash is remembered
PROGRESS_EVERY = 500
POLL_TIMEOUT_MS = 500
MAX_POLL_RECORDS = 2000
SESSION_TIMEOUT_MS = 10_000
METADATA_MAX_AGE_MS = 5000  # a group member sees topics (re)created after it joined this soon, not in kafka-python's 5 min
RANGE_IDLE_LIMIT_S = 15.0  # a bounded read with no new data this long fails rather than truncate silently
ADMIN_TIMEOUT_MS = 5000
FETCH_MAX_BYTES = 8 * 1024 * 1024
RECEIVE_MAX_BYTES = FETCH_MAX_BYTES + 4 * 1024 * 1024  # a fetch may overshoot by one batch (KIP-74)
# kafka-python's reconnect backoff grows to 30 s by default: after a 30 s outage a client would wait that long again.
CONSUMER_SETTINGS: dict[str, object] = dict(enable_auto_commit=False, allow_auto_create_topics=False,
                                            fetch_max_bytes=FETCH_MAX_BYTES, receive_message_max_bytes=RECEIVE_MAX_BYTES,
                                            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS)
_ENCODE_STAGE = "kafka-encode"
_DECODE_STAGE = "kafka-decode"


def raw_topic(kind: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The topic of one source family: ``memtape.raw.email``."""
    return f"{prefix}.raw.{kind}"


def raw_topics(prefix: str = DEFAULT_PREFIX) -> list[str]:
    return [raw_topic(kind, prefix) for kind in SOURCE_KINDS]


def dead_letter_topic(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}.deadletter"


def client_options(cfg: KafkaConfig) -> dict[str, str]:
    """kafka-python settings for SASL/TLS from ``[kafka]`` config; empty values are left to kafka-python."""
    options = {"security_protocol": cfg.security_protocol}
    if cfg.sasl_mechanism:
        options.update(sasl_mechanism=cfg.sasl_mechanism, sasl_plain_username=cfg.sasl_username,
                       sasl_plain_password=cfg.sasl_password)
    if cfg.ssl_cafile:
        options["ssl_cafile"] = cfg.ssl_cafile
    return options


def ensure_topics(bootstrap_servers: str, topics: Iterable[str], partitions: int = DEFAULT_PARTITIONS,
                  options: Mapping[str, object] | None = None) -> None:
    """Create the topics that do not exist yet; existing ones keep their partition count."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=ADMIN_TIMEOUT_MS, **(options or {}))
    try:
        for topic in topics:
            try:
                admin.create_topics([NewTopic(topic, partitions, REPLICATION_FACTOR)])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def _consumer(bootstrap_servers: str, options: Mapping[str, object], *topics: str, **config: object) -> KafkaConsumer:
    """A consumer with manual commits, no topic auto-creation and a frame limit that fits its fetch size.

    kafka-python's defaults disagree (50 MB fetches, 1 MB frames), which a
    broker that fills the fetch turns into ``InvalidReceiveError``.
    """
    try:
        return KafkaConsumer(*topics, bootstrap_servers=bootstrap_servers, **CONSUMER_SETTINGS, **config, **options)
    except NoBrokersAvailable as exc:
        raise UserError(f"{bootstrap_servers}: no Kafka broker answers (start one with `memtape broker`)") from exc


def _when_up(make: Callable[[], T], bootstrap_servers: str, timeout_s: float = DELIVERY_TIMEOUT_MS / 1000) -> T:
    """``make()`` a client, retrying while no broker answers (a restart in progress) for up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return make()
        except UserError:
            if time.monotonic() > deadline:
                raise
            log.info("no broker at %s yet; retrying", bootstrap_servers)
            time.sleep(STALL_S / 2)


def _close_producer(producer: KafkaProducer, timeout_s: float) -> None:
    """Close, abandoning whatever is still unsent after ``timeout_s``.

    kafka-python 2.3's ``close(timeout)`` raises from its flush when records
    remain, before it reaches its own force-close, so that step is done here.
    """
    try:
        producer.close(timeout=timeout_s)
    except KafkaTimeoutError:
        producer._sender.force_close()


# ---------------------------------------------------------------- publishing


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


@functools.lru_cache(maxsize=PARTITION_CACHE_KEYS)
def _key_hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF


def _partition(key: bytes, all_partitions: list[int], available: list[int]) -> int:
    """kafka-python's default (the Java client's murmur2 of the key), remembering each key's hash.

    A conversation's key repeats with every message, and pure-Python murmur2
    costs more per send than the rest of the partition choice.
    """
    return all_partitions[_key_hash(key) % len(all_partitions)]


def producer_settings(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> dict[str, object]:
    """kafka-python producer settings of the publisher (the benchmark gives its bare loop the same).

    ``acks=all`` and one request in flight per connection keep a conversation's
    order through retries (Tansu has no idempotent producer).
    """
    return dict(acks="all", retries=2**31 - 1, enable_idempotence=False, max_in_flight_requests_per_connection=1,
                delivery_timeout_ms=DELIVERY_TIMEOUT_MS, request_timeout_ms=min(30_000, DELIVERY_TIMEOUT_MS),
                linger_ms=LINGER_MS, batch_size=BATCH_BYTES, compression_type=COMPRESSION,
                max_request_size=max_message_bytes + 64 * 1024, allow_auto_create_topics=False, partitioner=_partition,
                reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS, max_block_ms=int(STALL_S * 1000))


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
                _close_producer(self._producer, 0)  # drop what is still buffered: the replay sends it in order
                self._producer = _when_up(self._new_producer, self.bootstrap_servers)
                _when_up(lambda: self._ensure(sorted(self._topics)), self.bootstrap_servers)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Close the producer; after ``publish`` returned nothing is left to flush, so this is quick."""
        _close_producer(self._producer, timeout_s)

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
                    record = DeadLetter(record.tenant, record.source, _ENCODE_STAGE, str(exc), position=record.source_id,
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
            consumer = _consumer(self.bootstrap_servers, self.options)
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
            consumer = _when_up(lambda: _consumer(self.bootstrap_servers, self.options), self.bootstrap_servers,
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


# ---------------------------------------------------------------- consuming


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
            self._consumer = _consumer(
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
                   *dead_letter_headers(reason, _DECODE_STAGE, topic=message.topic, partition=message.partition,
                                        offset=message.offset)]
        log.warning("dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)
        return self._dlq.send(self.dead_letter_topic, key=message.key, value=message.value, headers=headers)


# ---------------------------------------------------------------- bounded reads and offsets


@dataclasses.dataclass(frozen=True)
class TopicRange:
    """``kafka://TOPIC?from=N&to=M&partition=P``: offsets ``[from, to)`` of each chosen partition."""

    topic: str
    start: int | None = None
    stop: int | None = None
    partitions: tuple[int, ...] | None = None


def parse_kafka_uri(uri: str) -> TopicRange:
    """Parse a ``kafka://`` range URI; missing bounds mean the first and the last record present."""
    parts = urlsplit(uri)
    if parts.scheme != "kafka" or not parts.netloc:
        raise UserError(f"{uri}: expected kafka://TOPIC?from=OFFSET&to=OFFSET")
    query = parse_qs(parts.query)
    unknown = set(query) - {"from", "to", "partition"}
    if unknown:
        raise UserError(f"{uri}: unknown parameters {sorted(unknown)} (known: from, to, partition)")

    def offset(name: str) -> int | None:
        if name not in query:
            return None
        try:
            value = int(query[name][-1])
        except ValueError:
            raise UserError(f"{uri}: {name}= must be an offset (a non-negative integer)") from None
        if value < 0:
            raise UserError(f"{uri}: {name}= must not be negative")
        return value

    try:
        partitions = tuple(int(p) for p in query["partition"]) if "partition" in query else None
    except ValueError:
        raise UserError(f"{uri}: partition= must be an integer") from None
    return TopicRange(parts.netloc, offset("from"), offset("to"), partitions)


def _assign(consumer: KafkaConsumer, topic: str, partitions: Iterable[int] | None) -> list[TopicPartition]:
    known = consumer.partitions_for_topic(topic)
    if not known:
        raise UserError(f"{topic}: no such topic on {consumer.config['bootstrap_servers']}")
    chosen = sorted(known if partitions is None else partitions)
    missing = set(chosen) - known
    if missing:
        raise UserError(f"{topic}: no partitions {sorted(missing)} (it has {len(known)})")
    tps = [TopicPartition(topic, p) for p in chosen]
    consumer.assign(tps)
    return tps


def read_range(uri: str | TopicRange, bootstrap_servers: str, tenant: str = "default",
               options: Mapping[str, object] | None = None) -> Iterator[Consumed | DeadLetter]:
    """Stream exactly the records of a ``kafka://`` range, then stop.

    Each partition stops on the data itself: at the first record at or past
    ``to``, or once the read position reaches the high watermark that the
    broker's fetch responses carry. ``end_offsets()`` (ListOffsets) is never
    trusted: Tansu 0.6.0 answers the last batch's base offset + 1 there.
    Messages of a dead-letter topic and undecodable ones come out as
    ``DeadLetter`` values, as from any connector.
    """
    span = parse_kafka_uri(uri) if isinstance(uri, str) else uri
    consumer = _consumer(bootstrap_servers, options or {}, max_poll_records=MAX_POLL_RECORDS, fetch_max_wait_ms=100)
    try:
        tps = _assign(consumer, span.topic, span.partitions)
        first = consumer.beginning_offsets(tps)
        open_ = set()
        for tp in tps:
            start = max(span.start or 0, first[tp])
            if span.stop is None or start < span.stop:
                consumer.seek(tp, start)
                open_.add(tp)
        last_progress = time.monotonic()
        while open_:
            for tp, messages in consumer.poll(POLL_TIMEOUT_MS).items():
                if tp not in open_:
                    continue
                last_progress = time.monotonic()
                for m in messages:
                    if span.stop is not None and m.offset >= span.stop:
                        open_.discard(tp)
                        break
                    if any(k == DEAD_LETTER_REASON for k, _ in m.headers or ()):
                        yield decode_dead_letter(m.value, m.headers, tenant)
                        continue
                    try:
                        yield Consumed(m.topic, m.partition, m.offset, decode_event(m.value, m.headers))
                    except CodecError as exc:
                        yield DeadLetter(tenant, "kafka", _DECODE_STAGE, str(exc), position=f"{m.topic}:{m.partition}:{m.offset}",
                                         source_uri=f"kafka://{m.topic}", raw=m.value)
            for tp in list(open_):
                highwater = consumer.highwater(tp)
                position = consumer.position(tp)
                if (highwater is not None and position >= highwater) or (span.stop is not None and position >= span.stop):
                    open_.discard(tp)
            for tp in tps:
                if tp not in open_ and tp not in consumer.paused():
                    consumer.pause(tp)
            if open_ and time.monotonic() - last_progress > RANGE_IDLE_LIMIT_S:
                raise UserError(f"{span.topic}: no data from partitions {sorted(tp.partition for tp in open_)} "
                                f"for {RANGE_IDLE_LIMIT_S:.0f} s before the end of the range")
    finally:
        consumer.close()


def data_end_offsets(consumer: KafkaConsumer, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """Next offset of each partition, as the fetch responses' high watermark states it.

    ListOffsets (``end_offsets()``) only seeds the fetch position: it is never
    past the true end (Tansu reports the last batch's base offset + 1), so the
    fetch from there returns at most the last batch and its exact watermark.
    """
    consumer.assign(list(tps))
    hints = consumer.end_offsets(list(tps))
    for tp in tps:
        consumer.seek(tp, max(0, hints[tp] - 1))
    ends: dict[TopicPartition, int] = {}
    deadline = time.monotonic() + VERIFY_TIMEOUT_S
    while len(ends) < len(tps) and time.monotonic() < deadline:
        consumer.poll(POLL_TIMEOUT_MS)
        for tp in tps:
            highwater = consumer.highwater(tp)
            if highwater is not None and tp not in ends:
                ends[tp] = highwater
                consumer.pause(tp)
    missing = [f"{tp.topic}[{tp.partition}]" for tp in tps if tp not in ends]
    if missing:
        raise UserError(f"no fetch answer for {', '.join(missing)} within {VERIFY_TIMEOUT_S:.0f} s")
    return ends


@dataclasses.dataclass(frozen=True)
class PartitionInfo:
    topic: str
    partition: int
    end_offset: int
    committed: dict[str, int | None]  # consumer group -> committed offset (None: never committed)

    def lag(self, group: str) -> int | None:
        done = self.committed.get(group)
        return None if done is None else self.end_offset - done


def describe_topics(bootstrap_servers: str, options: Mapping[str, object] | None = None) -> list[PartitionInfo]:
    """Every topic's partitions with their end offsets and each consumer group's committed offset."""
    options = dict(options or {})
    consumer = _consumer(bootstrap_servers, options, fetch_max_wait_ms=100)
    try:
        tps = [TopicPartition(t, p) for t in sorted(consumer.topics()) for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = data_end_offsets(consumer, tps) if tps else {}
    finally:
        consumer.close()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=ADMIN_TIMEOUT_MS, **options)
    try:
        groups = sorted(g for g, _ in admin.list_consumer_groups())
    finally:
        admin.close()
    committed: dict[TopicPartition, dict[str, int | None]] = {tp: {} for tp in tps}
    for group in groups:
        member = _consumer(bootstrap_servers, options, group_id=group)
        try:
            for tp in tps:
                offset = member.committed(tp)
                if offset is not None:
                    committed[tp][group] = offset
        finally:
            member.close()
    return [PartitionInfo(tp.topic, tp.partition, ends[tp], committed[tp]) for tp in tps]


def topic_retention(bootstrap_servers: str, topics: Iterable[str], options: Mapping[str, object] | None = None
                    ) -> dict[str, int | None]:
    """``retention.ms`` of each of ``topics`` that exists (-1: kept forever; None: the broker does not say)."""
    options = dict(options or {})
    try:
        consumer = _consumer(bootstrap_servers, options)
        try:
            present = sorted(set(topics) & set(consumer.topics()))
        finally:
            consumer.close()
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=ADMIN_TIMEOUT_MS, **options)
    except (KafkaError, NoBrokersAvailable) as exc:
        raise UserError(f"{bootstrap_servers}: cannot reach Kafka ({exc})") from exc
    try:
        found: dict[str, int | None] = {topic: None for topic in present}
        if present:
            for response in admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in present]):
                for _code, _message, _type, topic, entries in response.resources:
                    for entry in entries:
                        if entry[0] == "retention.ms" and entry[1] is not None:
                            found[topic] = int(entry[1])
    finally:
        admin.close()
    return found
