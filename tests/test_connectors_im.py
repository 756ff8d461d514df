"""IM connectors: the shared Slack, WhatsApp, Telegram, Signal-style and IRC samples, spot-checked against the files."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from memtape.connectors.base import read_source
from memtape.schemas import conform
from memtape.schemas.records import DeadLetter, RawEvent

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
IM = SHARED / "im"
needs_shared = pytest.mark.skipif(not IM.exists(), reason="../shared/data absent: IM samples not available")


def events(uri: str) -> list[RawEvent]:
    return [r for r in read_source(uri, "t") if isinstance(r, RawEvent)]


@needs_shared
def test_slack_archive_names_senders_threads_bots_edits_and_files():
    records = list(read_source(f"slack:{IM / 'slack' / 'testarchive.zip'}", "t"))
    assert not [r for r in records if isinstance(r, DeadLetter)]
    by_id = {r.source_id: r for r in records}
    first = by_id["enrique:1452837352.000006"]
    assert first.sender == "Hamza Faran"  # U0BMQB6JE resolved through users.json
    assert first.text == "@Harry Potter: Created an issue for a setup.py so that it can be installed to a standard place"
    assert first.event_time == datetime.fromtimestamp(1452837352.000006, timezone.utc)
    assert first.conversation_id == "enrique"
    assert "Harry Potter" in first.recipients and "Hamza Faran" not in first.recipients
    bot = by_id["enrique:1454892394.000004"]
    assert bot.attrs["bot"] is True and bot.text.startswith("[enrique:master] 1 new commit by Anthony Bilinski:")
    edited = by_id["traveling-sailor:1458972985.000010"]
    assert edited.attrs["edited"] == "1458981134.000000"
    shared = by_id["traveling-sailor:1459052866.000012"]
    assert shared.attrs["files"][0]["name"] == "100_cities.js" and "100_cities.js" in shared.media_ref
    assert len(records) == 158
    assert conform("raw_events", [r.to_row() for r in records]).num_rows == 158


def test_slack_thread_replies_share_channel_plus_root_and_changes_replace_the_original(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "users.json").write_text(json.dumps([{"id": "U1", "name": "ann"}, {"id": "U2", "real_name": "Bob B"}]))
    (tmp_path / "channels.json").write_text(json.dumps([{"id": "C1", "name": "dev", "members": ["U1", "U2"]}]))
    day = [
        {"type": "message", "user": "U1", "text": "root <#C1|dev>", "ts": "1600000000.000100", "thread_ts": "1600000000.000100"},
        {"type": "message", "user": "U2", "text": "reply &amp; more", "ts": "1600000100.000200", "thread_ts": "1600000000.000100"},
        {"type": "message", "user": "U2", "text": "outside", "ts": "1600000200.000300"},
        {"type": "message", "subtype": "message_changed", "ts": "1600000300.000400",
         "message": {"user": "U2", "text": "outside (fixed)", "ts": "1600000200.000300", "edited": {"ts": "1600000300.000400"}}},
        {"type": "message", "subtype": "message_deleted", "ts": "1600000400.000500", "deleted_ts": "1600000200.000300"},
    ]
    (tmp_path / "dev" / "2020-09-13.json").write_text(json.dumps(day))
    root, reply, outside, changed = events(f"slack:{tmp_path}")
    assert root.conversation_id == reply.conversation_id == "dev:1600000000.000100"
    assert root.text == "root #dev" and reply.text == "reply & more" and reply.sender == "Bob B"
    assert outside.conversation_id == "dev"
    assert changed.source_id == outside.source_id and changed.event_id == outside.event_id
    assert changed.text == "outside (fixed)" and changed.attrs["edited"] == "1600000300.000400"


@needs_shared
@pytest.mark.parametrize("name", ["test_ddmmyy_24hrs", "test_mmddyy_24hrs", "test_mmddyyyy_12hrs", "test_yyyymmdd_24hrs"])
def test_whatsapp_exports_in_every_date_format_match_the_expected_parse(name):
    target = json.loads((IM / "exports" / "whatsapp" / "target.json").read_text())
    records = events(f"whatsapp:{IM / 'exports' / 'whatsapp' / (name + '.txt')}")
    authored = [r for r in records if r.attrs.get("subtype") != "system" and r.text != "."]
    got = sorted(((r.event_time.replace(tzinfo=None).isoformat(), r.sender, r.text.replace("\n", " ")) for r in authored),
                 reverse=True)
    want = [(t["timestamp"], t["author"], t["message"]) for t in target]
    assert got == want
    system = [r.text for r in records if r.attrs.get("subtype") == "system"]
    assert '+12 345 578 created group "Groupname"' in system and "You were added" in system
    assert all(r.event_time.tzinfo is not None and r.source_kind == "im" for r in records)


def test_whatsapp_ios_layout_media_and_zone_option(tmp_path):
    chat = tmp_path / "WhatsApp Chat - Ann.txt"
    chat.write_text("[13.02.21, 22:01:05] Ann: see photo\n"
                    "\u200e[13.02.21, 22:02:00] Ann: \u200e<attached: 00000012-PHOTO-2021-02-13.jpg>\n"
                    "[13.02.21, 22:03:00] Bob: <Media omitted>\n", encoding="utf-8")
    first, photo, omitted = events(f"whatsapp:{chat}?tz=Europe/Berlin")
    assert first.event_time.isoformat() == "2021-02-13T22:01:05+01:00"
    assert photo.media_ref == "00000012-PHOTO-2021-02-13.jpg" and photo.attrs["media"] == "attached"
    assert omitted.attrs["media"] == "omitted" and omitted.sender == "Bob"
    assert first.conversation_id == "WhatsApp Chat - Ann"


@needs_shared
def test_signal_style_bracketed_export_reads_as_ios_layout():
    target = json.loads((IM / "exports" / "signal" / "target.json").read_text())
    records = events(f"whatsapp:{IM / 'exports' / 'signal' / 'test_export.txt'}")
    assert [(r.event_time.replace(tzinfo=None).isoformat(), r.sender) for r in records] == sorted(
        (t["timestamp"], t["author"]) for t in target)
    assert records[1].text == "Hello\nJane!"


@needs_shared
@pytest.mark.parametrize("name", ["test_single_export.json", "test_batch_export.json"])
def test_telegram_single_and_batch_exports_match_the_expected_parse(name):
    target = json.loads((IM / "exports" / "telegram" / "target.json").read_text())
    records = events(f"telegram:{IM / 'exports' / 'telegram' / name}")
    assert [(r.event_time.replace(tzinfo=None).isoformat(), r.sender, r.text) for r in records] == [
        (t["timestamp"], t["author"], t["message"].replace("Link: ", "Link:")) for t in target]
    assert all(r.event_time.tzinfo == timezone.utc for r in records)
    if name == "test_batch_export.json":
        assert {r.conversation_id for r in records} == {"Chatname"}


def test_telegram_service_media_reply_and_local_dates(tmp_path):
    export = tmp_path / "result.json"
    export.write_text(json.dumps({"name": "Family", "id": 7, "messages": [
        {"id": 1, "type": "service", "date": "2019-05-01T08:00:00", "actor": "Ann", "action": "create_group"},
        {"id": 2, "type": "message", "date": "2019-05-01T08:01:00", "from": "Bob", "text": "", "photo": "photos/p1.jpg"},
        {"id": 3, "type": "message", "date": "2019-05-01T08:02:00", "from": "Ann", "text": "nice", "reply_to_message_id": 2},
    ]}))
    service, photo, reply = events(f"telegram:{export}?tz=+02:00")
    assert service.attrs["subtype"] == "service" and service.text == "Ann create_group"
    assert photo.media_ref == "photos/p1.jpg" and reply.attrs["reply_to"] == 2
    assert reply.event_time.isoformat() == "2019-05-01T08:02:00+02:00" and reply.source_id == "7:3"


@needs_shared
def test_irc_logs_take_the_date_from_the_file_name_and_handle_clock_wraps():
    records = list(read_source(f"irc:{IM / 'irc' / '2004-11-15_03.ascii.txt'}", "t"))
    assert len(records) == 1250 and all(isinstance(r, RawEvent) for r in records)
    first = records[0]
    assert (first.sender, first.text) == ("|trey|", "usual, quite stable though  :)")
    assert first.event_time == datetime(2004, 11, 15, 12, 18, tzinfo=timezone.utc)
    assert first.source_id == "2004-11-15_03.ascii.txt:1" and first.conversation_id == "2004-11-15_03"
    joins = [r for r in records if r.attrs.get("subtype") == "system"]
    assert joins and joins[0].text.endswith("has left #ubuntu []") and joins[0].sender is None
    times = [r.event_time for r in records]
    assert times == sorted(times) and times[-1] - times[0] < (datetime(2004, 11, 16) - datetime(2004, 11, 15))


def test_irc_date_option_actions_and_midnight_on_a_24_hour_clock(tmp_path):
    log = tmp_path / "channel.log"
    log.write_text("[23:58] <ann> late\n[23:59] * bob waves\n[00:01] <@carol> after midnight\n")
    late, wave, after = events(f"irc:{log}?date=2021-06-30&channel=%23dev")
    assert wave.attrs["subtype"] == "action" and wave.sender == "bob"
    assert after.sender == "carol" and after.event_time == datetime(2021, 7, 1, 0, 1, tzinfo=timezone.utc)
    assert late.conversation_id == "#dev"
