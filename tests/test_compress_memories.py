"""Compression turns episodes into budgeted, traceable memories and names the spans it kept; repeated facts merge; the eval meets its targets."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from click.testing import CliRunner

from memtape.cli import cli
from memtape.connectors.lance_store import Store
from memtape.evals.compression import command as eval_command
from memtape.schemas import conform
from memtape.schemas.records import memory_pieces, stable_id
from memtape.transforms.compress import EPISODES_TAG, SELECTED_TAG, CompressEpisodes, build_memory
from memtape.transforms.tokens import count_tokens

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LOCOMO = SHARED / "locomo" / "locomo_dev.json"
ENRON = SHARED / "email" / "skilling-j"
T0 = datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)

TURNS = [
    ("Melanie", "Hey Caroline! I ran a charity race for mental health last Saturday, it was really rewarding."),
    ("Caroline", "Wow, that's awesome, Mel! So proud of you!"),
    ("Melanie", "Thanks! Next month we're going camping at Lake Tahoe with the kids. I didn't book the site yet."),
    ("Caroline", "Sounds great! I'm researching adoption agencies that support LGBTQ+ parents."),
]


def _bundle() -> dict:
    units = [{"tenant": "t1", "event_id": f"e{i}", "source_kind": "im", "conversation_id": "c1", "sender": who,
              "event_time": T0 + timedelta(minutes=i), "text": text, "attrs": None, "stripped": {}, "duplicate_of": None}
             for i, (who, text) in enumerate(TURNS)]
    dropped = [{"tenant": "t1", "event_id": "e9", "reason": "short_ack", "duplicate_of": None}]
    episode = {"tenant": "t1", "episode_id": "ep1", "conversation_id": "c1", "source_kind": "im",
               "member_ids": ["e0", "e1", "e2", "e3", "e9"], "start_time": T0, "end_time": T0 + timedelta(minutes=9)}
    return {"episode": episode, "units": units, "dropped": dropped}


def test_memory_row_fits_the_schema_and_keeps_full_provenance():
    memory, dropped_summary, _spans = build_memory(_bundle())
    conform("memories", [memory])
    assert memory["memory_id"] == stable_id("t1", "ep1")
    assert memory["raw_event_ids"] == ["e0", "e1", "e2", "e3", "e9"]
    assert memory["triple_ids"] == []  # filled once the kept spans are parsed
    assert memory["token_count"] == count_tokens(memory["text"])
    assert memory["header"] == ("who: Melanie, Caroline; when: 2023-05-08 13:56 to 2023-05-08 14:05 UTC; where: im c1;"
                                " dropped: 1 short acknowledgement")
    assert dropped_summary == "1 short acknowledgement"


def test_memory_keeps_facts_and_drops_pleasantries_under_the_budget():
    memory, _, _ = build_memory(_bundle(), budget_ratio=0.8)
    raw = sum(count_tokens(t) for _, t in TURNS)
    assert memory["token_count"] <= 0.8 * raw + 8
    for fact in ("charity race", "mental health", "Lake Tahoe", "I didn't book the site yet", "adoption agencies"):
        assert fact in memory["text"]
    assert "proud" not in memory["text"]
    assert memory["text"].startswith("Melanie: ")


def test_loose_budget_keeps_sentences_verbatim():
    memory, _, _ = build_memory(_bundle(), budget_ratio=1.0)
    assert "Melanie: Hey Caroline! I ran a charity race for mental health last Saturday, it was really rewarding." in memory["text"]


def test_memory_selects_whole_sentences_and_never_rewrites_them():
    bundle = _bundle()
    bundle["units"][0]["text"] = ("I didn't pay $5.50 for the self-care kit at Walgreens on May 3rd, it was really 20% off! "
                                  "The weather was fine. My blood pressure read 128/82 mm[Hg] (LOINC 85354-9) at the pharmacy.")
    memory, _, _ = build_memory(bundle, budget_ratio=0.6)
    first = memory["text"].splitlines()[0].removeprefix("Melanie: ")
    pieces = first.split(" \u2026 ")
    sentences = bundle["units"][0]["text"]
    assert all(piece in sentences for piece in pieces), pieces
    assert "I didn't pay $5.50 for the self-care kit at Walgreens on May 3rd, it was really 20% off!" in first
    assert "128/82 mm[Hg] (LOINC 85354-9)" in first
    assert all(line.count("Melanie:") == 1 for line in memory["text"].splitlines() if "Melanie:" in line)  # once per message


def test_kept_spans_are_the_kept_sentences_as_the_unit_text_writes_them():
    bundle = _bundle()
    bundle["units"][2]["text"] = ("Thanks! Next month we're going camping at Lake Tahoe with the kids, a long\n"
                                  "drive from home. I didn't book the site yet.\nThe drive takes six hours.")
    _, _, whole = build_memory(bundle, budget_ratio=1.0)
    assert whole[2] == [(0, len(bundle["units"][2]["text"]))]  # next-door sentences make one span, hard wrap and all
    memory, _, spans = build_memory(bundle, budget_ratio=0.6)
    assert len(spans) == len(bundle["units"])
    kept = [bundle["units"][i]["text"][a:b] for i, unit_spans in enumerate(spans) for a, b in unit_spans]
    assert any("Next month we're going camping at Lake Tahoe with the kids, a long\ndrive from home." in piece for piece in kept)
    assert "I didn't book the site yet." not in memory["text"] and not any("book the site" in piece for piece in kept)
    for piece in kept:
        assert " ".join(piece.split()) in memory["text"]


def test_a_sentence_after_a_line_without_a_full_stop_splits_back_out_of_the_memory():
    """A signature line, then (its forward header removed by dedupe) the announcement: both stay whole pieces."""
    bundle = _bundle()
    bundle["units"] = bundle["units"][:1]
    announcement = ("It is my great pleasure to announce that the Board has accepted my recommendation to appoint "
                    "Jeff Skilling as chief executive officer, effective February 12, 2001.")
    bundle["units"][0]["text"] = ("Congratulations, I am so happy for you.\nTerrie James\nSr. Director, Corporate Communication"
                                  "\n\n" + announcement + " Jeff will also retain his duties as president.")
    memory, _, _ = build_memory(bundle, budget_ratio=1.0)
    body = memory["text"].removeprefix("Melanie: ")
    pieces = memory_pieces(memory["text"])
    assert f"Melanie: {announcement} Jeff will also retain his duties as president." in pieces  # next-door after a mark: one piece
    assert "Melanie: Sr. Director, Corporate Communication" in pieces
    assert body.startswith("Congratulations, I am so happy for you. Terrie James \u2026 Sr. Director")


EMAIL = """Message-ID: <{id}@example.org>
Date: {date}
From: Alice Ng <alice@example.org>
To: Bob Stone <bob@example.org>
Subject: {subject}

{body}
"""


def test_two_mails_stating_one_fact_leave_one_triple_with_both_as_support(tmp_path):
    mails = tmp_path / "mails"
    mails.mkdir()
    (mails / "1.eml").write_text(EMAIL.format(id="m1", date="Tue, 2 Mar 2021 09:15:00 +0000", subject="Board meeting",
                                              body="The board approved the budget yesterday."), encoding="utf-8")
    (mails / "2.eml").write_text(EMAIL.format(id="m2", date="Tue, 9 Mar 2021 10:00:00 +0000", subject="Hiring plan",
                                              body="Hiring starts in April, because the board approved the budget."),
                                 encoding="utf-8")
    result = CliRunner().invoke(cli, ["backfill", f"eml:{mails}", "--home", str(tmp_path / "home"), "--tenant", "t1"])
    assert result.exit_code == 0, result.output
    store = Store(str(tmp_path / "home"))
    events = {r["source_id"]: r["event_id"] for r in store.read("raw_events").to_pylist()}
    facts = [r for r in store.read("triples").to_pylist() if r["subject"].casefold() == "the board" and r["predicate"] == "approve"]
    assert len(facts) == 1, facts
    fact = facts[0]
    assert fact["object"] == "the budget"
    assert fact["support_count"] == 2
    assert sorted(fact["supporting_event_ids"]) == sorted(events.values())
    assert fact["raw_event_id"] == events["<m1@example.org>"]  # the first statement keeps the provenance
    assert fact["last_seen"].date().isoformat() == "2021-03-09"


def test_compress_episodes_transform_fills_the_episode_dropped_summary():
    with TestPipeline() as p:
        out = p | beam.Create([_bundle()]) | CompressEpisodes()
        assert_that(out.memories | beam.Map(lambda m: m["memory_id"]), equal_to([stable_id("t1", "ep1")]), label="memories")
        assert_that(out[EPISODES_TAG] | beam.Map(lambda e: (e["episode_id"], e["dropped_ids"], e["dropped_summary"])),
                    equal_to([("ep1", ["e9"], "1 short acknowledgement")]), label="episodes")
        assert_that(out[SELECTED_TAG] | beam.Map(lambda b: (b["episode"]["episode_id"], len(b["units"]), len(b["spans"]))),
                    equal_to([("ep1", 4, 4)]), label="selected")


def _eval(data: Path) -> dict:
    result = CliRunner().invoke(eval_command, ["--data", str(data), "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


@pytest.mark.skipif(not LOCOMO.exists(), reason="../shared/data absent: LoCoMo dev needed")
def test_locomo_memories_are_verbatim_and_keep_the_evidence():
    scores = _eval(LOCOMO)
    assert {"raw_tokens", "memory_tokens", "ratio", "verbatim_share", "near_dup_pairs", "evidence_survival"} <= scores.keys()
    assert scores["verbatim_share"] == 1.0
    assert scores["evidence_survival"] >= 0.9
    assert scores["ratio"] <= 0.95


@pytest.mark.skipif(not ENRON.exists(), reason="../shared/data absent: Enron skilling-j Maildir needed")
def test_enron_memories_are_verbatim_and_leave_quotes_signatures_and_repeats_out():
    scores = _eval(ENRON)
    assert scores["verbatim_share"] >= 0.98
    assert scores["ratio"] <= 0.7
    assert scores["near_dup_pairs"] > 0


def test_eval_rejects_a_missing_path_in_one_line():
    result = CliRunner().invoke(eval_command, ["--data", "/nonexistent/file.json"])
    assert result.exit_code != 0
    assert "no such LoCoMo" in str(result.exception)
