"""``memtape eval recall`` and the recall/forget commands, end to end on a tiny LoCoMo-shaped conversation."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from memtape.cli import cli

FIXTURE = Path(__file__).parent / "fixtures" / "recall" / "tiny_locomo.json"


@pytest.mark.slow
def test_eval_prints_the_issue_fields_for_recall_and_every_baseline(tmp_path: Path) -> None:
    home = tmp_path / "store"
    result = CliRunner().invoke(cli, ["eval", "recall", "--locomo", str(FIXTURE), "--budget", "1000", "--home", str(home),
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert {"budget", "evidence_recall", "by_category", "mean_context_tokens", "p95_latency_ms", "baselines",
            "verbatim_share", "answer_recall"} <= set(report)
    assert report["verbatim_share"] == 1.0  # every item's text stands in the raw turn it cites
    assert set(report["baselines"]) == {"bm25_turns", "dense_turns", "hybrid_turns", "fixed10_windows"}
    assert report["questions"] == 5  # the question without evidence is not asked; D9:9 does not exist and is dropped
    # Ten turns fit in 1,000 tokens whole: every baseline reaches every evidence turn. Recall cites only the
    # lines its memories kept, and compression drops two short turns (D1:3 and D2:4, one of them evidence).
    assert report["evidence_recall"] >= 0.8 and report["mean_context_tokens"] <= 1000
    assert all(b["evidence_recall"] == 1.0 for b in report["baselines"].values())
    assert set(report["by_category"]) == {"multi-hop", "temporal", "single-hop", "adversarial"}

    tight = CliRunner().invoke(cli, ["recall", "What did Tom fix on his bike?", "--tenant", "locomo-tiny-1",
                                     "--home", str(home), "--budget", "30", "--format", "json"])
    assert tight.exit_code == 0, tight.output
    recalled = json.loads(tight.stdout)
    assert recalled["tokens"] <= 30 and "Tom: I spent the weekend fixing my bike's gears" in recalled["context"]
    assert any(item["source_ids"] == ["D1:4"] for item in recalled["items"])

    text = CliRunner().invoke(cli, ["recall", "lighthouse", "--tenant", "locomo-tiny-1", "--home", str(home), "--budget", "40"])
    assert text.exit_code == 0 and "lighthouse" in text.output and "# " in text.output

    forgot = CliRunner().invoke(cli, ["forget", "--tenant", "locomo-tiny-1", "--home", str(home), "--below", "0.5", "--dry-run"])
    assert forgot.exit_code == 0 and "would archive" in forgot.output


def test_eval_on_a_missing_file_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "memtape", "eval", "recall", "--locomo", str(tmp_path / "nope.json")],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "Traceback" not in run.stderr and "nope.json" in run.stderr
