"""Video containers and speaker diarisation: a real two-voice meeting in an .mp4 becomes labelled turns and a memory naming both."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import av
import numpy as np
import pytest

from memtape.connectors.base import read_source
from memtape.evals.diarisation import (
    construct_set, halves_at_pause, load_clip, read_rttm, score, write_meeting, write_rttm,
)
from memtape.schemas.records import DeadLetter, RawEvent
from memtape.transforms import whisper_model as wm
from memtape.transforms.diarise import Diariser, speaker_label

SHARED_AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "audio"
HAVE_MODELS = all(importlib.util.find_spec(pkg) for pkg, _ in wm._BASE_PARTS) and importlib.util.find_spec("resemblyzer")
needs_models = pytest.mark.skipif(not HAVE_MODELS, reason="memtape[audio] not installed: no Whisper base model or speaker encoder")
needs_shared = pytest.mark.skipif(not (SHARED_AUDIO / "voices" / "input_4_16k.wav").is_file(),
                                  reason="../shared/data/audio (CMU clips) not present")
CPU_THREADS = 2


@pytest.fixture(scope="module")
def meeting(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """An .mp4 with a video stream and an AAC track: the CMU cards speaker and another real CMU speaker taking turns."""
    if not (SHARED_AUDIO / "voices" / "input_4_16k.wav").is_file():
        pytest.skip("../shared/data/audio (CMU clips) not present")
    folder = tmp_path_factory.mktemp("meeting")
    other_first, other_second = halves_at_pause(load_clip(SHARED_AUDIO / "voices" / "input_4_16k.wav"))
    cards = [load_clip(SHARED_AUDIO / "cards" / f"{n}.wav") for n in ("005", "002")]
    path = folder / "call.mp4"
    reference = write_meeting([(cards[0], "cards"), (other_first, "other"), (cards[1], "cards"), (other_second, "other")], path)
    write_rttm(path.with_suffix(".rttm"), reference)
    return path, reference


@pytest.fixture(scope="module")
def transcribed(meeting: tuple[Path, list], tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    if not HAVE_MODELS:
        pytest.skip("memtape[audio] not installed")
    from memtape.transforms.transcribe import UTTERANCES_TAG, TranscribeOptions, Transcriber

    os.environ.setdefault("MEMTAPE_CACHE", str(tmp_path_factory.mktemp("memtape-cache")))
    recording = next(r for r in read_source(f"audio:{meeting[0]}", "t1") if isinstance(r, RawEvent)).to_row()
    return [row for tag, row in Transcriber(TranscribeOptions(cpu_threads=CPU_THREADS)).rows(recording) if tag == UTTERANCES_TAG]


def test_constructed_meeting_is_a_video_container_with_an_audio_track(meeting):
    path, reference = meeting
    with av.open(str(path)) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}
    assert [speaker for *_, speaker in reference] == ["cards", "other", "cards", "other"]
    read_back = read_rttm(path.with_suffix(".rttm"))
    assert [s for *_, s in read_back] == [s for *_, s in reference]
    assert np.allclose([t[:2] for t in read_back], [t[:2] for t in reference], atol=2e-3)


def test_the_connector_takes_the_video_file_as_a_recording_with_its_audio_facts(meeting):
    (recording,) = [r for r in read_source(f"audio:{meeting[0]}", "t1")]
    assert isinstance(recording, RawEvent) and recording.attrs["media"] == "recording"
    assert recording.attrs["codec"] == "aac" and recording.attrs["channels"] == 1
    assert meeting[1][-1][1] < recording.attrs["duration_s"] < meeting[1][-1][1] + 3.0  # the last turn, its clip's tail, a pause


def test_a_video_without_an_audio_track_is_a_dead_letter_and_the_folder_still_reads(meeting, tmp_path: Path):
    silent = tmp_path / "screen.mkv"
    with av.open(str(silent), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 40, np.uint8), format="rgb24")))
        container.mux(stream.encode(None))
    (tmp_path / "call.mp4").write_bytes(meeting[0].read_bytes())
    records = list(read_source(f"audio:{tmp_path}", "t1"))
    (dead,) = [r for r in records if isinstance(r, DeadLetter)]
    assert dead.position == str(silent) and dead.error.startswith("no audio track (the file holds video)")
    assert [Path(r.media_ref).name for r in records if isinstance(r, RawEvent)] == ["call.mp4"]


def test_sidecar_voice_names_win_over_diarisation_for_a_video(meeting, tmp_path: Path):
    video = tmp_path / "standup.mov"
    video.write_bytes(meeting[0].read_bytes())
    (tmp_path / "standup.vtt").write_text("WEBVTT\n\n00:00.500 --> 00:03.000\n<v Ana Ruiz>Eight of spades.\n\n"
                                          "00:03.400 --> 00:05.800\n<v Bo Chen>Feels like these days.\n", encoding="utf-8")
    from memtape.transforms.transcribe import needs_transcription

    records = [r for r in read_source(f"audio:{video}", "t1") if isinstance(r, RawEvent)]
    assert not needs_transcription(records[0].to_row())
    assert [(r.sender, r.attrs["start_ms"], r.attrs["end_ms"]) for r in records[1:]] == [("Ana Ruiz", 500, 3000), ("Bo Chen", 3400, 5800)]


def test_a_zoom_transcript_names_speakers_by_prefix_only_when_every_cue_has_one(tmp_path: Path):
    from memtape.connectors.sources.subtitles import read_cues

    zoom = tmp_path / "zoom.vtt"
    zoom.write_text("WEBVTT\n\n1\n00:00:01.000 --> 00:00:03.000\nAna Ruiz: Shall we ship on Friday?\n\n"
                    "2\n00:00:03.500 --> 00:00:05.000\nBo Chen: Agreed: Friday it is.\n", encoding="utf-8")
    assert [(c.speaker, c.text) for c in read_cues(zoom)] == [("Ana Ruiz", "Shall we ship on Friday?"), ("Bo Chen", "Agreed: Friday it is.")]
    mixed = tmp_path / "notes.srt"
    mixed.write_text("1\n00:00:01,000 --> 00:00:02,000\nNote: the room mic was off.\n\n"
                     "2\n00:00:02,500 --> 00:00:04,000\nThen the budget came up.\n", encoding="utf-8")
    assert [(c.speaker, c.text) for c in read_cues(mixed)] == [(None, "Note: the room mic was off."), (None, "Then the budget came up.")]


def test_scores_are_exact_on_hand_made_turns():
    reference = [(0.0, 4.0, "a"), (5.0, 9.0, "b")]
    assert score(reference, [(0.0, 4.0, "x"), (5.0, 9.0, "y")], collar_s=0)["der"] == 0.0
    swapped = score(reference, [(0.0, 4.0, "y"), (5.0, 9.0, "x")], collar_s=0)
    assert swapped["der"] == 0.0 and swapped["purity"] == 1.0  # labels are mapped, not compared by name
    one = score(reference, [(0.0, 9.0, "x")], collar_s=0)
    assert one["confusion"] == 0.5 and one["false_alarm"] == pytest.approx(0.125) and one["purity"] == pytest.approx(0.5)
    assert one["coverage"] == 1.0
    late = score(reference, [(0.2, 4.0, "x"), (5.0, 9.0, "y")], collar_s=0.25)
    assert late["der"] == 0.0 and score(reference, [(0.2, 4.0, "x"), (5.0, 9.0, "y")], collar_s=0)["missed"] == 0.025


@needs_models
def test_bare_diariser_finds_two_speakers_in_order_of_first_appearance(meeting):
    diariser = Diariser()
    diariser.add(load_clip(meeting[0]), 0.0)
    turns = diariser.finish().turns()
    assert {speaker_label(s) for *_, s in turns} == {"speaker 1", "speaker 2"} and turns[0][2] == 0
    assert score(meeting[1], [(a, b, speaker_label(s)) for a, b, s in turns])["purity"] >= 0.8


@pytest.mark.slow
@needs_models
def test_two_voices_in_an_mp4_become_utterances_whose_speakers_follow_the_turns(meeting, transcribed):
    assert {u["speaker"] for u in transcribed} == {"speaker 1", "speaker 2"}
    assert transcribed[0]["speaker"] == "speaker 1" and "spades" in transcribed[0]["text"].lower()
    hypothesis = [(u["start_ms"] / 1000, u["end_ms"] / 1000, u["speaker"]) for u in transcribed]
    assert score(meeting[1], hypothesis)["purity"] >= 0.8
    cards = " ".join(u["text"].lower() for u in transcribed if u["speaker"] == "speaker 1")
    assert "spades" in cards and "queen" in cards
    assert all(0 <= u["start_ms"] < u["end_ms"] <= meeting[1][-1][1] * 1000 + 1000 for u in transcribed)
    assert all(w["start_ms"] >= u["start_ms"] and w["end_ms"] <= u["end_ms"] for u in transcribed for w in u["words"])


@pytest.mark.slow
@needs_models
@needs_shared
def test_the_meeting_memory_names_both_speakers_after_a_backfill(meeting, transcribed, tmp_path: Path):
    from memtape.connectors.lance_store import Store
    from memtape.pipelines.backfill import run_backfill
    from memtape.query import sql

    store = Store(str(tmp_path / "home"))
    run_backfill([f"audio:{meeting[0]}"], "t1", store, runner="DirectRunner")
    speakers = {r["speaker"] for r in sql("SELECT speaker FROM utterances", store).to_pylist()}
    assert speakers == {"speaker 1", "speaker 2"}
    memories = sql("SELECT header, text, participants FROM memories", store).to_pylist()
    assert len(memories) == 1
    (memory,) = memories
    assert memory["header"].startswith("who: speaker 1, speaker 2;") and memory["participants"] == ["speaker 1", "speaker 2"]
    assert memory["text"].startswith("speaker 1: ") and "\nspeaker 2: " in memory["text"]


@pytest.mark.slow
@needs_models
@needs_shared
def test_eval_diarisation_builds_the_set_and_reports_der_beside_the_baseline(tmp_path: Path):
    from click.testing import CliRunner

    from memtape.errors import UserError
    from memtape.evals.diarisation import command

    built = construct_set(SHARED_AUDIO, tmp_path / "all")
    assert len(built) == len(list((SHARED_AUDIO / "voices").glob("*.wav"))) and all(p.with_suffix(".rttm").is_file() for p in built)
    one = tmp_path / "one"
    one.mkdir()
    for suffix in (".mp4", ".rttm"):
        (one / f"x{suffix}").write_bytes(built[3].with_suffix(suffix).read_bytes())
    result = CliRunner().invoke(command, ["--audio-dir", str(one), "--format", "json", "--threads", str(CPU_THREADS)],
                                catch_exceptions=False)
    report = json.loads(result.output)
    assert 0.0 <= report["der"] <= 1.0 and report["collar_s"] == 0.25 and report["files"] == 1
    assert {"der", "purity", "coverage"} <= set(report["baseline"])
    with pytest.raises(UserError, match="no such folder"):
        CliRunner().invoke(command, ["--audio-dir", str(tmp_path / "nope")], standalone_mode=False, catch_exceptions=False)
