"""Resource limits: input past a limit becomes a dead letter whose reason names the limit; its neighbours land.

Zip entry count and expansion, zip-slip and a message past ``max_message_bytes``
in nine connectors are proven in ``test_connectors_malformed.py``; audio
duration in ``test_audio_connector.py``. This file covers nested MIME and JSON
depth, message files past ``max_attachment_bytes`` and oversized subtitle cues.
"""
from __future__ import annotations

import json
import wave

import pytest

from memtape.connectors.base import read_source
from memtape.schemas import conform
from memtape.schemas.records import DeadLetter, RawEvent

DEEP_JSON = 200_000  # far past Python's recursion limit


def _read(uri: str) -> tuple[list[RawEvent], list[DeadLetter]]:
    records = list(read_source(uri, "t"))
    letters = [r for r in records if isinstance(r, DeadLetter)]
    conform("dead_letters", [letter.to_row() for letter in letters])
    return [r for r in records if isinstance(r, RawEvent)], letters


def _mail(body: bytes, n: int) -> bytes:
    return f"Message-ID: <m{n}@x>\nDate: Mon, 15 Mar 2021 10:00:00 +0000\nFrom: a@x\n".encode() + body


def _nested(depth: int) -> bytes:
    body = b"Content-Type: text/plain\n\ninnermost\n"
    for level in range(depth):
        b = f"b{level}".encode()
        body = b"Content-Type: multipart/mixed; boundary=" + b + b"\n\n--" + b + b"\n" + body + b"\n--" + b + b"--\n"
    return b"MIME-Version: 1.0\n" + body


def test_mime_nested_past_max_nesting_depth_is_dead_lettered_and_the_next_mail_lands(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMTAPE_LIMITS_MAX_NESTING_DEPTH", "5")
    (tmp_path / "1.eml").write_bytes(_mail(_nested(8), 1))
    (tmp_path / "2.eml").write_bytes(_mail(b"\ngood mail\n", 2))
    (tmp_path / "3.eml").write_bytes(_mail(_nested(4), 3))
    good, letters = _read(f"eml:{tmp_path}")
    assert sorted(e.source_id for e in good) == ["<m2@x>", "<m3@x>"] and good[1].text == "innermost"
    assert [(d.stage, d.error) for d in letters] == [("connector.limit", "LimitError: MIME parts nested deeper than 5")]


@pytest.mark.parametrize("scheme,name,frame", [
    ("jsonl", "deep.jsonl", lambda deep, good: deep + "\n" + json.dumps({"text": good}) + "\n"),
    ("fhir", "deep.ndjson", lambda deep, good: deep + "\n" + json.dumps(
        {"resourceType": "Condition", "id": "c1", "code": {"text": good}, "subject": {"reference": "Patient/p"}}) + "\n"),
    ("telegram", "result.json", lambda deep, good: '{"messages": [' + deep + "," + json.dumps(
        {"id": 2, "date_unixtime": "1615802400", "from": "a", "text": good}) + "]}"),
    ("slack", "general/2021-03-15.json", lambda deep, good: "[" + deep + "," + json.dumps(
        {"user": "U1", "text": good, "ts": "1615802400.000100"}) + "]"),
])
def test_json_nested_past_the_parser_limit_is_dead_lettered_and_the_next_record_lands(scheme, name, frame, tmp_path):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(frame("[" * DEEP_JSON + "]" * DEEP_JSON, "good after deep"))
    good, letters = _read(f"{scheme}:{tmp_path if scheme == 'slack' else path}")
    assert [e.text.split(": ")[-1] for e in good] == ["good after deep"]
    assert len(letters) == 1 and letters[0].stage.startswith("connector")
    assert "recursion depth" in letters[0].error or "nested deeper than the parser allows" in letters[0].error


@pytest.mark.parametrize("scheme", ["mbox", "maildir"])
def test_a_message_file_past_max_attachment_bytes_is_refused_unread(scheme, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMTAPE_LIMITS_MAX_ATTACHMENT_BYTES", "20000")
    mails = [_mail(b"\nsmall one\n", 1), _mail(b"\n" + b"y" * 50_000 + b"\n", 2), _mail(b"\nsmall two\n", 3)]
    if scheme == "mbox":
        (tmp_path / "box.mbox").write_bytes(b"".join(b"From a Mon Mar 15 10:00:00 2021\n" + m + b"\n" for m in mails))
    else:
        for n, mail in enumerate(mails):
            (tmp_path / f"{n}.msg").write_bytes(mail)
    good, letters = _read(f"{scheme}:{tmp_path}")
    assert [e.text for e in good] == ["small one", "small two"]
    assert len(letters) == 1 and letters[0].stage == "connector.limit" and "20000" in letters[0].error
    assert len(letters[0].raw) <= 1024  # only the head of the refused message is kept


def test_a_subtitle_cue_past_max_message_bytes_is_dead_lettered_and_the_other_cues_land(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMTAPE_LIMITS_MAX_MESSAGE_BYTES", "1000")
    with wave.open(str(tmp_path / "talk.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(b"\0\0" * 1600)
    (tmp_path / "talk.vtt").write_text("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nfirst cue\n\n"
                                       f"00:00:02.000 --> 00:00:03.000\n{'z' * 5000}\n\n"
                                       "00:00:03.000 --> 00:00:04.000\nlast cue\n")
    good, letters = _read(f"audio:{tmp_path / 'talk.wav'}")
    assert [e.text for e in good] == [None, "first cue", "last cue"]  # the recording itself, then its cues
    assert [(d.stage, d.error) for d in letters] == [("connector.limit", "cue text exceeds max_message_bytes (1000)")]
