"""The audio connector: recording rows, sidecar metadata and captions, bad files, streamed decoding. No model needed."""
from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from memtape.connectors.base import SourceError, read_source
from memtape.connectors.sources.audio import (
    SAMPLE_RATE, RecordingTooLong, decode_windows, file_uri, recording_id, uri_path,
)
from memtape.connectors.sources.subtitles import Cue, parse_cues, read_cues, timestamp_ms
from memtape.schemas import conform
from memtape.schemas.records import DeadLetter, RawEvent

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "audio"


def _read(path: Path) -> tuple[list[RawEvent], list[DeadLetter]]:
    records = list(read_source(f"audio:{path}", "t1"))
    return [r for r in records if isinstance(r, RawEvent)], [r for r in records if isinstance(r, DeadLetter)]


def test_recording_row_takes_title_participants_and_zoned_start_from_sidecar_json():
    events, dead = _read(FIXTURES / "standup" / "standup.wav")
    assert dead == []
    (rec,) = events
    assert rec.source_kind == "meeting" and rec.source == "audio"
    assert rec.media_ref == (FIXTURES / "standup" / "standup.wav").resolve().as_uri()
    assert rec.text is None and rec.payload and "Weekly standup" in rec.payload
    assert rec.attrs["title"] == "Weekly standup"
    assert rec.recipients == ["Ana Ruiz", "Ben Okafor"]
    assert rec.event_time == datetime(2024, 3, 5, 8, 30, tzinfo=timezone.utc)
    row = rec.to_row()
    assert row["tz_offset_minutes"] == 60
    assert row["conversation_id"] == row["event_id"] == recording_id("t1", FIXTURES / "standup" / "standup.wav")
    assert conform("raw_events", [row]).num_rows == 1


def test_file_tags_time_and_title_are_used_without_sidecar_json():
    events, _ = _read(FIXTURES / "captions" / "review.mp3")
    rec = events[0]
    assert rec.attrs["title"] == "Quarterly review"
    assert rec.attrs["event_time_source"] == "tags"
    assert rec.event_time == datetime(2023, 11, 14, 15, 0, tzinfo=timezone.utc)


def test_modification_time_is_the_last_resort_and_absurd_sidecar_dates_are_ignored(tmp_path: Path):
    audio = tmp_path / "old.wav"
    shutil.copyfile(FIXTURES / "standup" / "standup.wav", audio)
    (tmp_path / "old.json").write_text('{"start_time": "1901-01-01T00:00:00Z", "title": "Archive"}')
    stamp = datetime(2022, 6, 1, 12, 0, tzinfo=timezone.utc).timestamp()
    os.utime(audio, (stamp, stamp))
    (rec,), _ = _read(audio)
    assert rec.attrs["event_time_source"] == "mtime"
    ended = datetime(2022, 6, 1, 12, 0, tzinfo=timezone.utc)  # the last write ends the recording
    assert rec.event_time == ended - timedelta(seconds=rec.attrs["duration_s"])
    assert rec.attrs["duration_s"] > 1
    assert rec.attrs["title"] == "Archive"


def test_webvtt_cues_become_text_rows_with_the_speakers_the_file_names():
    events, dead = _read(FIXTURES / "captions" / "review.mp3")
    rec, *cues = events
    assert rec.attrs["transcript"].endswith("review.vtt")
    assert [(c.text, c.sender) for c in cues] == [
        ("Quarterly review.", "Dana Lee"), ("Revenue is up & costs are flat.", "Sam Ito")]
    assert all(c.conversation_id == rec.event_id and c.source_kind == "meeting" for c in cues)
    assert cues[1].event_time == rec.event_time + timedelta(milliseconds=1500)
    assert cues[1].media_ref == f"{rec.media_ref}#t=1.5,3"
    (bad,) = dead
    assert bad.error == "cue ends before it starts" and bad.position.endswith("review.vtt:14")
    assert [c.attrs.get("last_cue") for c in cues] == [None, True]  # the recording's conversation is complete


def test_a_captioned_recording_made_a_moment_ago_reaches_memories_in_one_backfill(tmp_path: Path):
    from memtape.connectors.lance_store import Store
    from memtape.pipelines.backfill import run_backfill
    from memtape.query import sql

    for name in ("retro.ogg", "retro.srt"):  # copies: their modification time is now
        shutil.copyfile(FIXTURES / "captions" / name, tmp_path / name)
    store = Store(str(tmp_path / "home"))
    run_backfill([f"audio:{tmp_path / 'retro.ogg'}"], "t1", store, runner="DirectRunner")
    (memory,) = sql("SELECT text, raw_event_ids FROM memories", store).to_pylist()
    assert "sprint" in memory["text"].lower() and len(memory["raw_event_ids"]) == 2


def test_srt_cues_with_crlf_and_markup_are_plain_text_without_invented_speakers():
    events, dead = _read(FIXTURES / "captions" / "retro.ogg")
    assert dead == []
    assert [(c.text, c.sender, c.attrs["start_ms"]) for c in events[1:]] == [
        ("Retro.", None, 100), ("What went well this sprint?", None, 1000)]


def test_corrupt_and_empty_files_become_dead_letters_and_the_folder_still_reads():
    events, dead = _read(FIXTURES)
    errors = {Path(d.position).name: d.error for d in dead}
    assert errors["corrupt.wav"].startswith("unreadable audio:")
    assert errors["empty.m4a"].startswith("unreadable audio:")
    assert "without channels" in errors["empty.flac"]
    assert "JSONDecodeError" in errors["broken_meta.json"]
    assert all(d.stage == "connector" and d.raw is None for d in dead if not d.position.endswith(".vtt:14"))
    titles = {e.attrs["title"] for e in events if e.attrs["media"] == "recording"}
    assert titles == {"broken_meta", "call", "retro", "Quarterly review", "Weekly standup"}


def test_rereading_a_folder_gives_the_same_event_ids():
    first, _ = _read(FIXTURES)
    second, _ = _read(FIXTURES)
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert len({e.event_id for e in first}) == len(first)


def test_missing_source_stops_with_one_line_naming_it(tmp_path: Path):
    with pytest.raises(SourceError, match="no such file or folder"):
        list(read_source(f"audio:{tmp_path / 'absent.wav'}", "t1"))


def test_media_reference_round_trips_to_the_local_path_with_odd_characters(tmp_path: Path):
    odd = tmp_path / "team meeting #3 [final].wav"
    assert uri_path(file_uri(odd)) == odd
    assert uri_path(file_uri(odd) + "#t=1,2") == odd


def test_decoding_streams_bounded_windows_that_add_up_to_the_whole_recording():
    path = FIXTURES / "standup" / "standup.wav"
    windows = list(decode_windows(path, window_s=2.0))
    assert len(windows) >= 3
    assert all(w.seconds <= 2.0 for w in windows)
    total = sum(w.channels[0].shape[0] for w in windows)
    assert abs(total / SAMPLE_RATE - 6.2567) < 0.01
    assert [w.offset_s for w in windows[1:]] == pytest.approx(np.cumsum([w.seconds for w in windows[:-1]]).tolist())


def test_stereo_decoding_keeps_each_line_on_its_own_channel():
    (window,) = decode_windows(FIXTURES / "call" / "call.flac", stereo=True)
    left, right = window.channels
    first_half = slice(0, len(left) // 3)
    assert np.abs(left[first_half]).max() > 10 * np.abs(right[first_half]).max()


def test_audio_past_the_limit_is_cut_and_reported_after_the_kept_windows():
    windows = []
    with pytest.raises(RecordingTooLong, match="limit of 2.5 s"):
        for window in decode_windows(FIXTURES / "standup" / "standup.wav", window_s=2.0, max_seconds=2.5):
            windows.append(window)
    assert sum(w.seconds for w in windows) == pytest.approx(2.5)


def test_vtt_timestamps_without_hours_and_windows_1252_captions_parse(tmp_path: Path):
    assert timestamp_ms("02:03.4") == 123_400
    assert timestamp_ms("1:02:03,456") == 3_723_456
    srt = tmp_path / "legacy.srt"
    srt.write_bytes("1\n00:00:01,000 --> 00:00:02,000\nCaf\xe9 at 9 \u2013 ok\n".encode("cp1252"))
    assert list(read_cues(srt)) == [Cue(0, 1000, 2000, "Café at 9 – ok")]


def test_caption_blocks_without_timing_are_reported_not_swallowed():
    cues = list(parse_cues(["WEBVTT\n", "\n", "just some text\n", "\n", "00:01.000 --> 00:02.000\n", "fine\n"]))
    assert cues[0].error.startswith("no timing line") and cues[0].line == 3
    assert cues[1] == Cue(0, 1000, 2000, "fine")
