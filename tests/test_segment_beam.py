"""SegmentEpisodes: grouped conversation units in, EPISODES rows out, through a real Beam pipeline."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that

from memtape.schemas import conform
from memtape.transforms.segment_episodes import SegmentEpisodes

FIXTURE = Path(__file__).parent / "fixtures" / "segment" / "topics.json"
T0 = datetime(2024, 1, 8, 14, 0, tzinfo=timezone.utc)


def _units(conversation: str) -> list[dict]:
    items = json.loads(FIXTURE.read_text())
    return [{"event_id": f"{conversation}-{i:02d}", "tenant": "t", "conversation_id": conversation, "source_kind": "im",
             "sender": it["sender"], "text": it["text"], "event_time": T0 + timedelta(minutes=i)}
            for i, it in enumerate(items)]


def test_segment_episodes_covers_every_unit_in_time_order_per_conversation():
    shuffled = list(reversed(_units("a")))  # grouping loses order; the transform restores it by event time

    def check(rows):
        conform("episodes", rows)
        for conversation in ("a", "b"):
            mine = [r for r in rows if r["conversation_id"] == conversation]
            mine.sort(key=lambda r: r["start_time"])
            members = [m for r in mine for m in r["member_ids"]]
            assert members == [u["event_id"] for u in _units(conversation)], members
            assert mine[-1]["boundary_signal"] == "end"

    with test_pipeline.TestPipeline() as p:
        rows = (p | beam.Create([("t/a", shuffled), ("t/b", _units("b"))]) | SegmentEpisodes())
        assert_that(rows, check)
