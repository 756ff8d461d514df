"""Kafka transport: topics, the publisher, the consumer group and bounded topic reads.

Records go to one topic per source family (``<prefix>.raw.im|email|meeting|health``)
keyed by tenant + conversation, so one conversation stays in one partition and
in order; anything a stage cannot handle goes to ``<prefix>.deadletter`` with
the reason in headers. Delivery is at least once: the publisher treats a pass
as done only when the broker still holds what it acknowledged, and replays the
(re-readable) input otherwise; ids are content-derived, so the sink dedupes
replays by ``event_id``. This package moves messages only; it never parses
sources (``memtape.connectors.base``) or lands rows (the sink).

One job a module: ``admin`` (topic names, client settings, topic creation and
retention), ``publisher``, ``consumer`` (the consumer-group member), ``ranges``
(``kafka://`` bounded reads and true end offsets) and ``lag``. The public names
stay importable from here.
"""
from memtape.connectors.kafka.admin import (
    CONSUMER_SETTINGS, DEFAULT_PARTITIONS, DEFAULT_PREFIX, MAX_POLL_RECORDS, client_options, dead_letter_topic, ensure_topics,
    new_consumer, producer_settings, raw_topic, raw_topics, topic_retention,
)
from memtape.connectors.kafka.consumer import Batch, Consumed, RawEventConsumer
from memtape.connectors.kafka.lag import PartitionInfo, describe_topics
from memtape.connectors.kafka.publisher import Publisher, PublishReport, SourceRecords, publish_records
from memtape.connectors.kafka.ranges import TopicRange, data_end_offsets, parse_kafka_uri, read_range

__all__ = [
    "CONSUMER_SETTINGS", "DEFAULT_PARTITIONS", "DEFAULT_PREFIX", "MAX_POLL_RECORDS", "Batch", "Consumed", "PartitionInfo",
    "PublishReport", "Publisher", "RawEventConsumer", "SourceRecords", "TopicRange", "client_options", "data_end_offsets",
    "dead_letter_topic", "describe_topics", "ensure_topics", "new_consumer", "parse_kafka_uri", "producer_settings",
    "publish_records", "raw_topic", "raw_topics", "read_range", "topic_retention",
]
