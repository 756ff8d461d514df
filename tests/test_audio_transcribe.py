"""Transcription: the packaged model offline, utterances with words and honest speaker labels, dead letters, Beam."""
from __future__ import annotations

import importlib.util
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import av
import numpy as np
import pytest

from memtape.connectors.sources.audio import decode_windows, read_audio
from memtape.errors import UserError
from memtape.schemas import conform
from memtape.schemas.records import RawEvent
from memtape.transforms import whisper_model as wm
from memtape.transforms.transcribe import (
    DEAD_LETTERS_TAG, MONO_SPEAKER, UTTERANCES_TAG, TranscribeOptions, TranscribeRecordings, Transcriber,
    UtterancesAsUnits, channels_are_separate, needs_transcription, utterance_unit,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "audio"
HAVE_MODEL = all(importlib.util.find_spec(pkg) for pkg, _ in wm._BASE_PARTS)
pytestmark = pytest.mark.skipif(not HAVE_MODEL, reason="memtape[audio] not installed: no packaged Whisper base model")
CPU_THREADS = 2


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh model cache for this module, so the join-and-verify path runs here rather than being assumed."""
    root = tmp_path_factory.mktemp("memtape-cache")
    previous = os.environ.get("MEMTAPE_CACHE")
    os.environ["MEMTAPE_CACHE"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("MEMTAPE_CACHE", None)
    else:
        os.environ["MEMTAPE_CACHE"] = previous


@pytest.fixture(scope="module")
def transcriber(cache: Path) -> Transcriber:
    return Transcriber(TranscribeOptions(cpu_threads=CPU_THREADS))


@pytest.fixture(scope="module")
def standup(transcriber: Transcriber) -> tuple[dict, list[dict], list[dict]]:
    """The standup recording row with its utterances and dead letters, transcribed once for the module."""
    recording = _recording(FIXTURES / "standup" / "standup.wav")
    return (recording, *_run(transcriber, recording))


def _recording(path: Path) -> dict:
    return next(r for r in read_audio(str(path), "t1") if isinstance(r, RawEvent)).to_row()


def _run(transcriber: Transcriber, row: dict) -> tuple[list[dict], list[dict]]:
    out = list(transcriber.rows(row))
    return [r for t, r in out if t == UTTERANCES_TAG], [r for t, r in out if t == DEAD_LETTERS_TAG]


def test_packaged_base_model_is_joined_once_into_the_cache_with_its_checksum(cache: Path, transcriber: Transcriber):
    folder = cache / "whisper-base"
    assert (folder / "model.bin.sha256").read_text().strip() == wm.BASE_MODEL_SHA256
    assert {p.name for p in folder.iterdir()} >= {"model.bin", "config.json", "tokenizer.json", "vocabulary.json"}
    before = (folder / "model.bin").stat().st_mtime_ns
    assert wm.resolve_model("base") == str(folder)
    assert (folder / "model.bin").stat().st_mtime_ns == before


def test_a_damaged_model_part_is_refused_and_leaves_no_half_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(wm, "BASE_MODEL_SHA256", "0" * 64)  # stands for parts whose bytes no longer match
    with pytest.raises(UserError, match="damaged"):
        wm.packaged_base_dir(tmp_path)
    assert not (tmp_path / "whisper-base").exists() and not (tmp_path / "whisper-base.partial").exists()


def test_an_unknown_model_name_is_a_one_line_error_not_a_download(tmp_path: Path):
    with pytest.raises(UserError, match="neither a local directory nor in the local model cache"):
        wm.resolve_model("definitely-not-a-cached-model-xyz")
    with pytest.raises(UserError, match="no model.bin"):
        wm.resolve_model(str(tmp_path))


def test_device_and_compute_type_default_to_cpu_int8_here_and_float16_on_cuda():
    assert wm.compute_type_for("cuda") == "float16"
    assert wm.compute_type_for("cpu") == "int8"
    assert wm.compute_type_for("cpu", "float32") == "float32"
    assert wm.whisper_device("cuda") == "cuda"
    assert TranscribeOptions(device="cuda").resolved_batch_size() == 16
    assert TranscribeOptions(device="cpu").resolved_batch_size() == 1


def test_mono_meeting_becomes_utterances_split_at_the_pause_with_words_and_times(standup):
    _, utterances, dead = standup
    assert dead == []
    assert len(utterances) == 2
    first, second = utterances
    assert "good morning" in first["text"].lower()
    assert "budget" in second["text"].lower() and "friday" in second["text"].lower()
    assert [u["seq"] for u in utterances] == [0, 1]
    assert {u["speaker"] for u in utterances} == {"speaker 1"}  # one voice: diarisation invents no second speaker
    assert {u["language"] for u in utterances} == {"en"}
    assert first["end_ms"] + 900 <= second["start_ms"]  # the 1.5 s pause between the sentences
    assert second["event_time"] == datetime(2024, 3, 5, 8, 30, tzinfo=timezone.utc) + timedelta(milliseconds=second["start_ms"])
    words = second["words"]
    assert [w["word"].strip(".").lower() for w in words][-1] == "friday"
    assert all(second["start_ms"] <= w["start_ms"] <= w["end_ms"] <= second["end_ms"] for w in words)
    assert 0.3 < second["confidence"] <= 1.0
    assert conform("utterances", utterances).num_rows == 2


def test_batched_inference_the_gpu_path_gives_the_same_turns(cache: Path, standup):
    batched = Transcriber(TranscribeOptions(cpu_threads=CPU_THREADS, batch_size=4, diarise=False))
    assert batched.batch_size == 4
    _, sequential, _ = standup
    utterances, dead = _run(batched, _recording(FIXTURES / "standup" / "standup.wav"))
    assert dead == []
    assert len(utterances) == len(sequential) == 2
    assert "friday" in utterances[1]["text"].lower() and utterances[1]["words"]
    assert {u["speaker"] for u in utterances} == {MONO_SPEAKER}  # diarisation off: no speaker is claimed


@pytest.mark.slow
def test_stereo_call_with_one_talker_per_channel_gets_two_unknown_speakers(transcriber: Transcriber):
    utterances, dead = _run(transcriber, _recording(FIXTURES / "call" / "call.flac"))
    assert dead == []
    by_speaker = {u["speaker"]: u["text"].lower() for u in utterances}
    assert set(by_speaker) == {"unknown speaker 1", "unknown speaker 2"}
    assert "hear me" in by_speaker["unknown speaker 1"]
    assert "clearly" in by_speaker["unknown speaker 2"]
    assert utterances[0]["speaker"] == "unknown speaker 1"  # time order across channels


def test_mono_saved_as_stereo_is_transcribed_once_not_per_channel(transcriber: Transcriber, tmp_path: Path):
    (window,) = decode_windows(FIXTURES / "standup" / "standup.wav")
    path = tmp_path / "twice.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=16000, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.stack([window.channels[0]] * 2), format="fltp", layout="stereo")
        frame.sample_rate = 16000
        for chunk in av.AudioResampler(format="s16", layout="stereo", rate=16000).resample(frame):
            for packet in stream.encode(chunk):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    utterances, _ = _run(transcriber, _recording(path))
    assert len(utterances) == 2
    assert {u["speaker"] for u in utterances} == {"speaker 1"}


def test_channel_separation_needs_one_channel_to_dominate_speech():
    rng = np.random.default_rng(0)
    talk = rng.normal(0, 0.1, 16000 * 2).astype(np.float32)
    quiet = np.zeros_like(talk)
    assert channels_are_separate(np.concatenate([talk, quiet]), np.concatenate([quiet, talk])) is True
    assert channels_are_separate(talk, talk * 0.8) is False
    assert channels_are_separate(quiet, quiet) is None


def test_recording_past_the_limit_keeps_what_fits_and_reports_the_rest(cache: Path):
    limited = Transcriber(TranscribeOptions(cpu_threads=CPU_THREADS, max_audio_seconds=2.5))
    utterances, dead = _run(limited, _recording(FIXTURES / "standup" / "standup.wav"))
    assert ["good morning" in u["text"].lower() for u in utterances] == [True]
    (letter,) = dead
    assert letter["stage"] == "transcribe" and "limit of 2.5 s" in letter["error"]
    assert letter["position"].endswith("#t=2.5")


def test_utterance_unit_reads_like_a_chat_message_of_the_recording(standup):
    recording, utterances, _ = standup
    units = [utterance_unit(u) for u in utterances]
    assert [u["event_id"] for u in units] == [u["utterance_id"] for u in utterances]
    assert {u["conversation_id"] for u in units} == {recording["event_id"]}
    assert {(u["source_kind"], u["sender"]) for u in units} == {("meeting", "speaker 1")}
    assert units[1]["event_time"] == recording["event_time"] + timedelta(milliseconds=utterances[1]["start_ms"])
    assert units[1]["text"] == utterances[1]["text"]
    assert conform("raw_events", units).num_rows == 2


@pytest.mark.slow
def test_beam_transform_skips_captioned_recordings_and_dead_letters_a_corrupt_file(transcriber: Transcriber, tmp_path: Path):
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    corrupt = tmp_path / "meeting.wav"
    shutil.copyfile(FIXTURES / "standup" / "standup.wav", corrupt)
    good = _recording(corrupt)
    corrupt.write_bytes(b"RIFF junk that is no longer audio")
    captioned = _recording(FIXTURES / "captions" / "review.mp3")
    standup = _recording(FIXTURES / "standup" / "standup.wav")
    assert not needs_transcription(captioned) and needs_transcription(standup)
    with beam.Pipeline() as pipeline:
        outputs = pipeline | beam.Create([good, captioned, standup]) | TranscribeRecordings(transcriber.options)
        assert_that(outputs.utterances | beam.Map(lambda u: (u["recording_event_id"], u["seq"], u["speaker"])),
                    equal_to([(standup["event_id"], 0, "speaker 1"), (standup["event_id"], 1, "speaker 1")]),
                    label="UtterancesOfTheGoodRecording")
        assert_that(outputs.dead_letters | beam.Map(lambda d: (d["stage"], d["error"].startswith("unreadable audio"))),
                    equal_to([("transcribe", True)]), label="OneDeadLetter")
        assert_that(outputs.utterances | UtterancesAsUnits() | beam.Map(lambda u: u["conversation_id"]),
                    equal_to([standup["event_id"]] * 2), label="UnitsInTheRecordingsConversation")


@pytest.mark.slow
def test_a_recording_made_a_moment_ago_reaches_memories_in_the_backfill_that_transcribes_it(cache: Path, tmp_path: Path):
    """A recording is whole once transcribed: its episode closes now, not after the meeting gap of idle time."""
    from memtape.connectors.lance_store import Store
    from memtape.pipelines.backfill import run_backfill
    from memtape.query import sql

    fresh = tmp_path / "just-now.wav"
    shutil.copyfile(FIXTURES / "standup" / "standup.wav", fresh)  # its modification time is now
    store = Store(str(tmp_path / "home"))
    run_backfill([f"audio:{fresh}"], "t1", store, runner="DirectRunner")
    memories = sql("SELECT text, source_kind FROM memories", store).to_pylist()
    assert len(memories) == 1 and memories[0]["source_kind"] == "meeting"
    assert "budget" in memories[0]["text"].lower()
    (recorded,) = sql("SELECT event_time FROM raw_events", store).to_pylist()
    assert recorded["event_time"] < datetime.now(timezone.utc) - timedelta(seconds=1)  # began its length before the write
