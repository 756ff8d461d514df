"""Kafka topics and clients: topic names, client settings, topic creation and retention, and the consumer factory.

Records go to one topic per source family (``<prefix>.raw.im|email|meeting|health``);
anything a stage cannot handle goes to ``<prefix>.deadletter``. Every other
module of the package makes its clients through here. It sends and reads no
records itself.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Callable, Iterable, Mapping, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError, NoBrokersAvailable, TopicAlreadyExistsError
from kafka.partitioner.default import murmur2

from memtape.config import KafkaConfig
from memtape.connectors.base import SOURCE_KINDS
from memtape.connectors.kafka_codec import DEFAULT_MAX_MESSAGE_BYTES
from memtape.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_PREFIX = "memtape"
DEFAULT_PARTITIONS = 6
REPLICATION_FACTOR = -1  # the cluster's default.replication.factor (KIP-464); Tansu accepts it too
DELIVERY_TIMEOUT_MS = 300_000  # a broker may be away this long (a 30 s outage with ample margin)
STALL_S = 2.0  # an ack this late: check whether the broker is away (wait) or came back empty (replay)
VERIFY_TIMEOUT_S = 30.0
LINGER_MS = 50  # throughput over latency: publish is bulk; a 50 ms wait is invisible next to the pipeline
BATCH_BYTES = 512 * 1024  # well under the brokers' default message.max.bytes (1 MiB), which caps a batch
# Batches are gzipped: kafka-python checksums every batch (CRC32C) in pure Python unless the optional
# ``crc32c`` package is installed, at about 0.5 us a byte here, and it checksums the compressed bytes.
# JSON rows of chat lines shrink about 5x, zlib runs in C, and every Kafka broker (Tansu too) accepts it.
COMPRESSION = "gzip"
RECONNECT_BACKOFF_MAX_MS = 1000
PARTITION_CACHE_KEYS = 65_536  # conversations whose key hash is remembered
POLL_TIMEOUT_MS = 500
MAX_POLL_RECORDS = 2000
ADMIN_TIMEOUT_MS = 5000
FETCH_MAX_BYTES = 8 * 1024 * 1024
RECEIVE_MAX_BYTES = FETCH_MAX_BYTES + 4 * 1024 * 1024  # a fetch may overshoot by one batch (KIP-74)
# kafka-python's reconnect backoff grows to 30 s by default: after a 30 s outage a client would wait that long again.
CONSUMER_SETTINGS: dict[str, object] = dict(enable_auto_commit=False, allow_auto_create_topics=False,
                                            fetch_max_bytes=FETCH_MAX_BYTES, receive_message_max_bytes=RECEIVE_MAX_BYTES,
                                            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS)
DECODE_STAGE = "kafka-decode"


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


def new_consumer(bootstrap_servers: str, options: Mapping[str, object], *topics: str, **config: object) -> KafkaConsumer:
    """A consumer with manual commits, no topic auto-creation and a frame limit that fits its fetch size.

    kafka-python's defaults disagree (50 MB fetches, 1 MB frames), which a
    broker that fills the fetch turns into ``InvalidReceiveError``.
    """
    try:
        return KafkaConsumer(*topics, bootstrap_servers=bootstrap_servers, **CONSUMER_SETTINGS, **config, **options)
    except NoBrokersAvailable as exc:
        raise UserError(f"{bootstrap_servers}: no Kafka broker answers (start one with `memtape broker`)") from exc


def when_up(make: Callable[[], T], bootstrap_servers: str, timeout_s: float = DELIVERY_TIMEOUT_MS / 1000) -> T:
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


def close_producer(producer: KafkaProducer, timeout_s: float) -> None:
    """Close, abandoning whatever is still unsent after ``timeout_s``.

    kafka-python 2.3's ``close(timeout)`` raises from its flush when records
    remain, before it reaches its own force-close, so that step is done here.
    """
    try:
        producer.close(timeout=timeout_s)
    except KafkaTimeoutError:
        producer._sender.force_close()


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


def topic_retention(bootstrap_servers: str, topics: Iterable[str], options: Mapping[str, object] | None = None
                    ) -> dict[str, int | None]:
    """``retention.ms`` of each of ``topics`` that exists (-1: kept forever; None: the broker does not say)."""
    options = dict(options or {})
    try:
        consumer = new_consumer(bootstrap_servers, options)
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
