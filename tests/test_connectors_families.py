"""Backfilling one shared sample of each family lands all four source families, each spot-checked, meetings through to memories."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED_DATA, needs_shared
from memtape.connectors.lance_store import Store
from memtape.query import sql

NOTES_INBOX = SHARED_DATA / "email" / "skilling-j" / "notes_inbox"
MAILS = 24  # a slice of the folder: every message file parses in tests/test_connectors_email.py; here they must flow through
CLIPS = ("003.wav", "005.wav")  # "seven of clubs", "eight of spades four of clubs seven of hearts": Whisper costs seconds a clip


def _sources(tmp_path: Path) -> list[str]:
    mails = tmp_path / "notes_inbox"
    mails.mkdir()
    for name in sorted(p.name for p in NOTES_INBOX.iterdir())[:MAILS]:
        shutil.copy(NOTES_INBOX / name, mails / name)
    clips = tmp_path / "cards"
    clips.mkdir()
    for name in CLIPS:
        shutil.copy(SHARED_DATA / "audio" / "cards" / name, clips / name)
    return [f"whatsapp:{SHARED_DATA / 'im' / 'exports' / 'whatsapp' / 'test_ddmmyy_24hrs.txt'}", f"maildir:{mails}",
            f"fhir:{SHARED_DATA / 'health' / 'fhir' / 'patient-cb5696d9-a0de-4f49-94f9-433f96a28eb0.json'}",
            f"audio:{clips}"]


def _sql(home: Path, query: str) -> list[dict]:
    return sql(query, Store(str(home))).to_pylist()


@pytest.mark.slow
@needs_shared
def test_one_sample_per_family_lands_im_email_health_and_meeting(tmp_path: Path):
    home = tmp_path / "home"
    subprocess.run([sys.executable, "-m", "memtape", "backfill", "--tenant", "fam", *_sources(tmp_path)], check=True,
                   capture_output=True, text=True, env={**os.environ, "MEMTAPE_HOME": str(home)})
    families = {r["source_kind"]: r["n"] for r in _sql(home, "SELECT source_kind, count(*) AS n FROM raw_events GROUP BY 1")}
    assert set(families) == {"im", "email", "health", "meeting"}
    assert families["email"] == MAILS  # one raw row per message file
    assert families["meeting"] == len(CLIPS)  # one recording row per clip
    spoken = " ".join(r["text"].lower() for r in _sql(home, "SELECT text FROM utterances ORDER BY recording_event_id, seq"))
    assert "clubs" in spoken and "spades" in spoken
    spoken_memories = _sql(home, "SELECT text FROM memories WHERE source_kind = 'meeting'")
    assert spoken_memories and any("clubs" in r["text"].lower() for r in spoken_memories)  # end to end: audio to memory
    zones = _sql(home, "SELECT DISTINCT tz_offset_minutes AS z FROM raw_events WHERE source_kind = 'email'")
    assert {r["z"] for r in zones} <= {-480, -420}  # Enron's Date headers are Pacific time, standard and daylight
    # Recall hands back what was said, line by line, each cited to its recording and the second it starts at.
    out = subprocess.run([sys.executable, "-m", "memtape", "recall", "Which cards suits were named?", "--tenant", "fam",
                          "--budget", "1000", "--format", "json"], check=True, capture_output=True, text=True,
                         env={**os.environ, "MEMTAPE_HOME": str(home)})
    said = [item for item in json.loads(out.stdout)["items"] if item["source_kind"] == "meeting"]
    utterances = [r["text"] for r in _sql(home, "SELECT text FROM utterances")]
    assert said and all(any(item["text"] in u for u in utterances) and item["sources"] == ["audio"] for item in said)
    assert all(len(item["source_ids"]) == 1 and "#t=" in item["source_ids"][0] for item in said)
