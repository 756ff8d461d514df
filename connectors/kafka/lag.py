"""Consumer lag: each partition's end offset beside every consumer group's committed offset (``memtape topics``)."""
from __future__ import annotations

import dataclasses
from typing import Mapping

from kafka import KafkaAdminClient, TopicPartition

from memtape.connectors.kafka.admin import ADMIN_TIMEOUT_MS, new_consumer
from memtape.connectors.kafka.ranges import data_end_offsets


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
    consumer = new_consumer(bootstrap_servers, options, fetch_max_wait_ms=100)
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
        member = new_consumer(bootstrap_servers, options, group_id=group)
        try:
            for tp in tps:
                offset = member.committed(tp)
                if offset is not None:
                    committed[tp][group] = offset
        finally:
            member.close()
    return [PartitionInfo(tp.topic, tp.partition, ends[tp], committed[tp]) for tp in tps]
