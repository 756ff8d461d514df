"""``memtape eval segmentation`` scoring and ``memtape plot episodes`` drawing, end to end through the CLI."""
from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest
from click.testing import CliRunner
from nltk.metrics.segmentation import pk as nltk_pk, windowdiff as nltk_windowdiff

from memtape.cli import cli
from memtape.evals.segmentation import (boundaries, fixed_lengths, load_dialogues, pk, segment_dialogues,
                                        texttiling_lengths, window_k, windowdiff, _score)

FIXTURE = Path(__file__).parent / "fixtures" / "segment" / "topics.json"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DIALSEG = SHARED / "segmentation" / "dialseg711.json"
FIELDS = {"pk", "windowdiff", "dialogues", "utterances_per_s", "baselines", "segments_per_dialogue", "pk_definition"}


def _dialogues(path: Path) -> Path:
    items = json.loads(FIXTURE.read_text())
    topics = [[i["text"] for i in items[k:k + 6]] for k in (0, 6, 12)]
    dialogues = [{"utterances": topics[a] + topics[b] + topics[c], "segments": [6, 6, 6]}
                 for a, b, c in ((0, 1, 2), (2, 0, 1), (1, 2, 0), (0, 2, 1))]
    path.write_text(json.dumps(dialogues))
    return path


def test_boundary_strings_end_with_the_final_boundary_and_k_is_at_least_two():
    assert boundaries([4, 2, 3]) == "000101001"
    assert window_k([2, 2, 3]) == 2 and window_k([30, 40]) == 18


@pytest.mark.parametrize("gold,hyp", [([4, 6, 6, 4, 4], [10, 14]), ([2, 8], [3, 3, 4]), ([6, 6, 6], [6, 6, 6])])
def test_scores_are_nltks_on_those_strings(gold, hyp):
    k = window_k(gold)
    scored = _score([{"utterances": ["u"] * sum(gold), "segments": gold}], [hyp])
    assert scored["pk"] == pytest.approx(nltk_pk(boundaries(gold), boundaries(hyp), k), abs=1e-4)
    assert scored["windowdiff"] == pytest.approx(nltk_windowdiff(boundaries(gold), boundaries(hyp), k), abs=1e-4)
    assert pk(boundaries(gold), boundaries(gold), k) == windowdiff(boundaries(gold), boundaries(gold), k) == 0.0


def test_dialogues_shorter_than_four_utterances_are_not_scored():
    short = {"utterances": ["a", "b", "c"], "segments": [1, 2]}
    long = {"utterances": ["u"] * 8, "segments": [4, 4]}
    assert _score([short, long], [[3], [4, 4]])["pk"] == 0.0  # the short one, all wrong, does not count


def test_baselines_cut_where_they_say():
    assert fixed_lengths(24) == [10, 10, 4]
    assert sum(texttiling_lengths(["short"] * 3)) == 3


def test_eval_command_prints_the_issue_fields(tmp_path):
    result = CliRunner().invoke(cli, ["eval", "segmentation", "--data", str(_dialogues(tmp_path / "d.json")),
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # model loading may report progress on stderr; stdout is the JSON alone
    assert out["embeddings"] == "minilm"  # the pipeline's configured vectors by default
    assert FIELDS <= set(out) and set(out["baselines"]) == {"texttiling", "fixed10", "none"}
    assert out["dialogues"] == 4 and out["utterances_per_s"] > 0
    assert out["baselines"]["none"]["pk"] == pytest.approx(0.4, abs=0.2)
    assert out["segments_per_dialogue"]["gold"] == 3.0 and out["segments_per_dialogue"]["predicted"] >= 1.0
    assert "at least 2" in out["pk_definition"] and "fewer than 4" in out["pk_definition"]


def test_eval_command_reports_a_missing_file_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["eval", "segmentation", "--data", str(tmp_path / "nope.json")])
    assert result.exit_code != 0 and "file not found" in str(result.exception)


@pytest.mark.skipif(not DIALSEG.exists(), reason="../shared/data absent: DialSeg711 is evaluation-only data")
def test_segmenter_beats_every_baseline_on_a_dialseg711_sample():
    dialogues = load_dialogues(DIALSEG)[1::7]  # a spread of ~100 dialogues, half of them outside the tuning half
    hyps, _ = segment_dialogues(dialogues)
    ours = _score(dialogues, hyps)["pk"]
    none = _score(dialogues, [[len(d["utterances"])] for d in dialogues])["pk"]
    fixed = _score(dialogues, [fixed_lengths(len(d["utterances"])) for d in dialogues])["pk"]
    assert ours < min(none, fixed) - 0.05, (ours, none, fixed)


def test_plot_episodes_draws_a_png_from_the_store(tmp_path, home):
    from memtape.connectors.lance_store import Store
    from memtape.transforms.segment import EpisodeSegmenter
    from memtape.transforms.static_embed import static_embeddings

    items = json.loads(FIXTURE.read_text()) * 2
    units = [{"event_id": f"e{i}", "tenant": "default", "conversation_id": "room-1", "source_kind": "im",
              "sender": it["sender"], "event_time": None, "text": it["text"]} for i, it in enumerate(items)]
    seg = EpisodeSegmenter(static_embeddings())
    rows = seg.feed(units) + seg.flush()
    Store.open(str(home)).upsert("episodes", rows)
    out = tmp_path / "plots" / "room.png"
    result = CliRunner().invoke(cli, ["plot", "episodes", "--conversation", "room-1", "--out", str(out),
                                      "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    missing = CliRunner().invoke(cli, ["plot", "episodes", "--conversation", "nope", "--out", str(out),
                                       "--home", str(home)])
    assert missing.exit_code != 0 and "no episodes" in str(missing.exception)


IRC = SHARED / "im" / "irc"


def test_time_ticks_label_units_with_their_time_and_the_date_where_it_changes():
    from datetime import datetime, timedelta, timezone

    from memtape.commands.plot import time_ticks

    start = datetime(2005, 6, 27, 23, 50, tzinfo=timezone.utc)
    when = [start + timedelta(minutes=i) for i in range(20)]
    positions, labels = time_ticks(when, count=4)
    assert positions == [0, 5, 10, 15]
    assert labels == ["23:50\n2005-06-27", "23:55", "00:00\n2005-06-28", "00:05"]


@pytest.mark.skipif(not IRC.exists(), reason="../shared/data absent: the IRC logs live there")
def test_a_1400_message_irc_log_plots_wide_with_time_on_the_x_axis(tmp_path):
    from PIL import Image

    from memtape.commands.plot import MAX_WIDTH, UNITS_PER_INCH, plot_episodes
    from memtape.connectors.sources.irc import read_irc
    from memtape.transforms.segment import EpisodeSegmenter
    from memtape.transforms.static_embed import static_embeddings

    events = list(islice((r for r in read_irc(f"{IRC}?channel=ubuntu", "t") if getattr(r, "text", None)), 1400))
    units = [{"event_id": e.source_id, "tenant": "t", "conversation_id": "ubuntu", "source_kind": "im",
              "sender": e.sender, "event_time": e.event_time, "text": e.text} for e in events]
    seg = EpisodeSegmenter(static_embeddings())
    rows = seg.feed(units) + seg.flush()
    assert len(units) == 1400 and sum(len(r["member_ids"]) for r in rows) == 1400
    out = plot_episodes(rows, tmp_path / "irc.png", times={u["event_id"]: u["event_time"] for u in units})
    assert Image.open(out).size == (round(min(MAX_WIDTH, 1400 / UNITS_PER_INCH) * 120), 480)  # wider, not squeezed
    # the channel's interleaved threads dwell, and its lines seldom open with a cue: length cuts and the night's gap
    assert {r["boundary_signal"] for r in rows} >= {"length", "time_gap"}
    assert all(len(r["member_ids"]) <= seg.config.max_episode_units for r in rows)
