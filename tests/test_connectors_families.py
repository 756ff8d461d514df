"""Backfilling one shared sample of each family lands all four source families, each spot-checked, meetings through to memories."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED_DATA, needs_shared

SOURCES = [
    f"slack:{SHARED_DATA / 'im' / 'slack' / 'testarchive.zip'}",
    f"maildir:{SHARED_DATA / 'email' / 'skilling-j' / 'notes_inbox'}",
    f"fhir:{SHARED_DATA / 'health' / 'fhir' / 'patient-cb5696d9-a0de-4f49-94f9-433f96a28eb0.json'}",
    f"audio:{SHARED_DATA / 'audio' / 'cards'}",
]


def _sql(home: Path, query: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "memtape", "sql", query, "--format", "json"], check=True,
                         capture_output=True, text=True, env={**os.environ, "MEMTAPE_HOME": str(home)})
    return json.loads(out.stdout)


@pytest.mark.slow
@needs_shared
def test_one_sample_per_family_lands_im_email_health_and_meeting(tmp_path: Path):
    home = tmp_path / "home"
    subprocess.run([sys.executable, "-m", "memtape", "backfill", "--tenant", "fam", *SOURCES], check=True,
                   capture_output=True, text=True, env={**os.environ, "MEMTAPE_HOME": str(home)})
    families = {r["source_kind"]: r["n"] for r in _sql(home, "SELECT source_kind, count(*) AS n FROM raw_events GROUP BY 1")}
    assert set(families) == {"im", "email", "health", "meeting"}
    assert families["email"] == 244  # one raw row per message file of notes_inbox
    assert families["meeting"] == 5  # one recording row per cards clip
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
