"""The CaRB scorer follows the paper's matching rules, and the extractor clears F1 0.50 on CaRB dev."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from memtape.evals._carb import Tuple, match, read_gold, score, sentence_key

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CARB = SHARED / "triples"


def test_exact_tuple_scores_one():
    g = Tuple("took", ("Alice", "aspirin"))
    assert match(g, g) == (1.0, 1.0)


def test_relation_without_shared_token_scores_zero():
    assert match(Tuple("took", ("Alice", "aspirin")), Tuple("swallowed", ("Alice", "aspirin"))) == (0.0, 0.0)


def test_missing_object_slot_scores_zero():
    assert match(Tuple("took", ("Alice", "aspirin")), Tuple("took", ("Alice",))) == (0.0, 0.0)


def test_lemma_be_matches_any_form_and_extra_args_join_the_object_slot():
    p, r = match(Tuple("was", ("Bob", "the manager", "in 2001")), Tuple("be", ("Bob", "the manager in 2001")))
    assert (p, r) == (1.0, 1.0)


def test_partial_overlap_is_token_level():
    p, r = match(Tuple("moved to", ("The meeting", "Friday")), Tuple("moved", ("meeting", "Friday afternoon")))
    assert p == pytest.approx(3 / 4) and r == pytest.approx(3 / 5)


def test_precision_matches_one_to_one_recall_takes_the_best():
    gold = {"k": [Tuple("took", ("Alice", "aspirin"))]}
    dup = Tuple("took", ("Alice", "aspirin"))
    result = score(gold, {"k": [dup, dup]})
    assert result.recall == 1.0 and result.precision == 0.5


def test_sentence_key_ignores_spacing_and_ptb_escapes():
    assert sentence_key("A -LRB- b -RRB- , c .") == sentence_key("A (b), c.")
    assert read_gold(["A b .\trel\tx\ty\t\n"])[sentence_key("A b.")] == [Tuple("rel", ("x", "y"))]


@pytest.mark.slow
@pytest.mark.skipif(not CARB.exists(), reason="../shared/data absent: CaRB dev split not checked out")
def test_eval_command_reaches_f1_050_on_carb_dev_and_beats_textacy():
    from memtape.evals.triples import command

    result = CliRunner().invoke(
        command, ["--sentences", str(CARB / "carb_dev_sentences.txt"), "--gold", str(CARB / "carb_dev_gold.tsv"),
                  "--format", "json", "--repeats", "1"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{"):])
    assert {"precision", "recall", "f1", "sentences_per_s", "baselines"} <= set(out)
    assert out["f1"] >= 0.50
    assert out["baselines"]["textacy_svo"]["f1"] < out["f1"]


def test_eval_command_reports_a_missing_file_in_one_line(tmp_path):
    from memtape.errors import UserError
    from memtape.evals.triples import command

    result = CliRunner().invoke(command, ["--sentences", str(tmp_path / "none.txt"), "--gold", str(tmp_path / "g.tsv")])
    assert isinstance(result.exception, UserError) and "no such file" in str(result.exception)
