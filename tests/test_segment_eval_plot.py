"""``memtape eval segmentation`` scoring and ``memtape plot episodes`` drawing, end to end through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from nltk.metrics.segmentation import pk as nltk_pk, windowdiff as nltk_windowdiff

from memtape.cli import cli
from memtape.evals.segmentation import (boundaries, fixed_lengths, load_dialogues, pk, segment_dialogues,
                                        texttiling_lengths, windowdiff, _score)

FIXTURE = Path(__file__).parent / "fixtures" / "segment" / "topics.json"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DIALSEG = SHARED / "segmentation" / "dialseg711.json"
FIELDS = {"pk", "windowdiff", "dialogues", "utterances_per_s", "baselines"}


def _dialogues(path: Path) -> Path:
    items = json.loads(FIXTURE.read_text())
    topics = [[i["text"] for i in items[k:k + 6]] for k in (0, 6, 12)]
    dialogues = [{"utterances": topics[a] + topics[b] + topics[c], "segments": [6, 6, 6]}
                 for a, b, c in ((0, 1, 2), (2, 0, 1), (1, 2, 0), (0, 2, 1))]
    path.write_text(json.dumps(dialogues))
    return path


@pytest.mark.parametrize("gold,hyp,k", [([4, 6, 6, 4, 4], [10, 14], 3), ([2, 8], [3, 3, 4], 2), ([5], [2, 3], 1),
                                        ([6, 6, 6], [6, 6, 6], 3)])
def test_pk_and_windowdiff_match_nltk(gold, hyp, k):
    to_str = lambda lens: "".join("1" if b else "0" for b in boundaries(lens))
    assert pk(boundaries(gold), boundaries(hyp), k) == pytest.approx(nltk_pk(to_str(gold), to_str(hyp), k))
    assert windowdiff(boundaries(gold), boundaries(hyp), k) == pytest.approx(
        nltk_windowdiff(to_str(gold), to_str(hyp), k))


def test_baselines_cut_where_they_say():
    assert fixed_lengths(24) == [10, 10, 4]
    assert sum(texttiling_lengths(["short"] * 3)) == 3


def test_eval_command_prints_the_issue_fields(tmp_path):
    result = CliRunner().invoke(cli, ["eval", "segmentation", "--data", str(_dialogues(tmp_path / "d.json")),
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert FIELDS <= set(out) and set(out["baselines"]) == {"texttiling", "fixed10", "none"}
    assert out["dialogues"] == 4 and out["utterances_per_s"] > 0
    assert out["baselines"]["none"]["pk"] == pytest.approx(0.4, abs=0.2)


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
