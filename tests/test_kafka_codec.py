"""The Kafka message codec: lossless round trips, versioned headers, media by reference only."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from memtape.connectors.kafka_codec import (
    CODEC_HEADER, PAYLOAD_HEADER, CodecError, decode_dead_letter, decode_event, encode_dead_letter, encode_event, event_key,
)
from memtape.schemas.records import DeadLetter, RawEvent


def _event(**changes) -> RawEvent:
    fields = dict(tenant="acme", source_kind="im", source="slack", source_id="1458000000.000002", text="ship it Friday",
                  event_time=datetime(2016, 3, 14, 9, 30, tzinfo=timezone(timedelta(hours=-5))),
                  conversation_id="C024BE91L", sender="U2147483697", recipients=["U1"], payload='{"ts": "1"}',
                  attrs={"thread_ts": "1458000000.000001"})
    fields.update(changes)
    return RawEvent(**fields)


def test_event_round_trips_with_its_stated_zone_and_attrs():
    event = _event()
    value, headers = encode_event(event)
    back = decode_event(value, headers)
    assert back == event
    assert back.event_time.utcoffset() == timedelta(hours=-5)
    assert json.loads(value)["event_id"] == event.event_id
    assert headers == [(CODEC_HEADER, b"json/1;raw_events/1")]


def test_key_is_tenant_and_conversation_so_a_conversation_shares_a_partition():
    assert event_key(_event(source_id="a")) == event_key(_event(source_id="b")) == b"acme\x1fC024BE91L"
    assert event_key(_event(conversation_id=None, source_id="m1")) == b"acme\x1fm1"


@pytest.mark.parametrize("headers, value, reason", [
    ([], b"{}", "unsupported memtape-codec"),
    ([("memtape-codec", b"json/1;raw_events/0")], b"{}", "unsupported memtape-codec"),
    ([("memtape-codec", b"json/2;raw_events/1")], b"{}", "unsupported memtape-codec"),
    ([("memtape-codec", b"json/1;raw_events/1")], b"\xff not json", "not JSON"),
    ([("memtape-codec", b"json/1;raw_events/1")], b'{"tenant": "x"}', "missing string fields"),
])
def test_decoder_refuses_what_it_cannot_read(headers, value, reason):
    with pytest.raises(CodecError, match=reason):
        decode_event(value, headers)


def test_altered_record_is_refused_by_its_event_id():
    value, headers = encode_event(_event())
    tampered = value.replace(b"1458000000.000002", b"1458000000.000003")
    with pytest.raises(CodecError, match="event_id"):
        decode_event(tampered, headers)


def test_media_travels_as_a_reference_never_inline():
    value, headers = encode_event(_event(source_kind="meeting", media_ref="s3://bucket/calls/standup.wav"))
    assert decode_event(value, headers).media_ref == "s3://bucket/calls/standup.wav"
    with pytest.raises(CodecError, match="reference"):
        encode_event(_event(media_ref="data:audio/wav;base64," + "A" * 5000))


def test_oversized_payload_is_left_out_but_the_text_travels():
    event = _event(payload="x" * 5000)
    value, headers = encode_event(event, max_bytes=2000)
    assert (PAYLOAD_HEADER, b"omitted") in headers
    back = decode_event(value, headers)
    assert back.payload is None and back.text == "ship it Friday"
    with pytest.raises(CodecError, match="exceeds"):
        encode_event(_event(text="y" * 5000, payload=None), max_bytes=2000)


def test_dead_letter_round_trips_through_headers():
    letter = DeadLetter("acme", "maildir", "connector", "RecordError: no header fields", position="inbox/genie",
                        source_uri="maildir:/mail", raw=b"tree HEAD")
    key, value, headers = encode_dead_letter(letter)
    back = decode_dead_letter(value, headers)
    assert (back.tenant, back.source, back.stage, back.error, back.position, back.source_uri, back.raw) == \
        ("acme", "maildir", "connector", "RecordError: no header fields", "inbox/genie", "maildir:/mail", b"tree HEAD")
    assert back.dead_letter_id == letter.dead_letter_id
