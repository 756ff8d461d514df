"""Faults around a backfill: a full or read-only store, a corrupt fragment or missing model, and what logs show.

The store fault is real: the ``memtape backfill`` process runs with
RLIMIT_FSIZE lowered, so every write past the limit fails with EFBIG, as on a
full disk. (A read-only store fails the same write path; it is not tested with
chmod because the suite runs as root, which writes through permissions.)
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from memtape.cli import cli
from memtape.connectors.lance_store import Store
from memtape.pipelines.backfill import run_backfill

MEMTAPE = str(Path(sys.executable).with_name("memtape"))
FULL_AT_BYTES = 48 * 1024  # each file of the new source's raw rows (one per sink shard) needs about 100 KB
BIG_ROWS = 3000
SECRET_BODY = "okapi-saffron-9183 meet me behind the lab"
SECRET_VALUE = "743.25"


def _jsonl(path: Path, n: int, day: int, marker: str = "") -> Path:
    path.write_text("".join(json.dumps({"id": f"{path.stem}-{i}", "text": f"{marker}message {i} " + "x" * 200,
                                        "time": f"2024-05-{day:02d}T10:{i % 60:02d}:{i // 60 % 60:02d}Z"}) + "\n"
                            for i in range(n)))
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMTAPE_")}
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _disk_full() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (FULL_AT_BYTES, FULL_AT_BYTES))


@pytest.mark.slow
def test_backfill_onto_a_full_disk_stops_in_one_line_and_keeps_cursors(tmp_path):
    home = tmp_path / "home"
    store = Store(str(home))
    first = _jsonl(tmp_path / "first.jsonl", 5, day=1)
    run_backfill([f"jsonl:{first}"], "t", store, derive_memories=False)
    cursors = store.read("cursors").to_pylist()
    big = _jsonl(tmp_path / "big.jsonl", BIG_ROWS, day=2)

    proc = subprocess.run([MEMTAPE, "backfill", f"jsonl:{big}", "--tenant", "t", "--home", str(home)],
                          capture_output=True, text=True, env=_env(), timeout=600, preexec_fn=_disk_full)

    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "cannot write table raw_events" in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert store.read("cursors").to_pylist() == cursors  # no cursor moved past what landed
    assert store.count("raw_events") == 5

    result = run_backfill([f"jsonl:{big}"], "t", store, derive_memories=False)  # space is back: nothing was lost
    assert store.count("raw_events") == 5 + BIG_ROWS
    assert result.cursors[f"jsonl:{big}"] == datetime(2024, 5, 2, 10, 59, 49, tzinfo=timezone.utc)


def test_doctor_names_a_corrupt_fragment_and_a_missing_model_file(tmp_path, monkeypatch):
    home = tmp_path / "home"
    run_backfill([f"jsonl:{_jsonl(tmp_path / 'chat.jsonl', 50, day=1)}"], "t", Store(str(home)), derive_memories=False)
    fragment = next((home / "raw_events.lance" / "data").glob("*.lance"))
    torn = fragment.read_bytes()
    fragment.write_bytes(torn[: len(torn) // 2])  # a write torn half way
    model = tmp_path / "minilm"
    model.mkdir()
    for name in ("config.json", "tokenizer.json", "modules.json"):
        (model / name).write_text("{}")
    monkeypatch.setenv("MEMTAPE_MODELS_EMBEDDING", str(model))
    whisper = tmp_path / "whisper"  # a faster-whisper directory that lost its weights
    whisper.mkdir()
    (whisper / "config.json").write_text("{}")
    monkeypatch.setenv("MEMTAPE_MODELS_WHISPER", str(whisper))

    result = CliRunner().invoke(cli, ["doctor", "--home", str(home), "--format", "json"])

    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    assert not checks["table raw_events"]["ok"] and fragment.name in checks["table raw_events"]["detail"]
    assert checks["table dead_letters"]["ok"] and checks["store"]["ok"]
    assert not checks["model embedding"]["ok"]
    assert checks["model embedding"]["detail"] == f"missing file {model / 'model.safetensors'}"
    assert not checks["model whisper"]["ok"] and "no model.bin" in checks["model whisper"]["detail"]


@pytest.mark.slow
def test_backfill_output_at_the_default_log_level_holds_no_bodies_or_health_values(tmp_path):
    chat = _jsonl(tmp_path / "chat.jsonl", 3, day=1, marker=SECRET_BODY + " ")
    with chat.open("a") as out:
        out.write('{"text": "' + SECRET_BODY + ' but broken\n')  # a dead letter keeps its raw bytes, not the logs
    labs = tmp_path / "labs.ndjson"
    labs.write_text(json.dumps({"resourceType": "Observation", "id": "o1", "code": {"text": "Glucose"},
                                "valueQuantity": {"value": float(SECRET_VALUE), "unit": "mg/dL"},
                                "effectiveDateTime": "2024-05-01T08:00:00Z", "subject": {"reference": "Patient/p1"}}) + "\n")
    home = tmp_path / "home"

    proc = subprocess.run([MEMTAPE, "backfill", f"jsonl:{chat}", f"fhir:{labs}", "--tenant", "t", "--home", str(home)],
                          capture_output=True, text=True, env=_env(), timeout=900)

    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "new rows" in proc.stdout
    store = Store(str(home))
    texts = " ".join(store.read("raw_events", columns=["text"]).column("text").to_pylist())
    assert SECRET_BODY in texts and SECRET_VALUE in texts and store.count("dead_letters") == 1
    for secret in (SECRET_BODY, "okapi-saffron", SECRET_VALUE):
        assert secret not in proc.stderr and secret not in proc.stdout
