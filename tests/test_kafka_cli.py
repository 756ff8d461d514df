"""`memtape broker`, `memtape publish` and `memtape topics` from the command line."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from click.testing import CliRunner

from memtape.cli import cli
from memtape.connectors.kafka_broker import free_port


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_broker_runs_in_the_foreground_and_stops_cleanly_on_sigterm(tmp_path: Path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", "from memtape.cli import main; main()", "broker", "--port", str(port),
                                "--data-dir", str(tmp_path)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    while not _listening(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _listening(port)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=15)
    assert process.returncode == 0
    assert "memory storage only" in err and "stopped" in err
    assert not _listening(port)  # the broker child went with it
    assert (tmp_path / "tansu.log").read_text().startswith("tansu broker")


def test_broker_help_says_storage_is_memory_only():
    result = CliRunner().invoke(cli, ["broker", "--help"])
    assert result.exit_code == 0 and "MEMORY STORAGE ONLY" in result.output


def test_publish_then_topics_show_end_offsets_per_family(kafka_broker, tmp_path: Path):
    source = tmp_path / "chat.jsonl"
    source.write_text("".join(json.dumps({"id": f"m{i}", "text": f"line {i}", "conversation": "general",
                                          "time": f"2024-05-01T09:0{i}:00+02:00"}) + "\n" for i in range(5))
                      + "not json\n")
    prefix = f"cli{uuid.uuid4().hex[:6]}"
    runner = CliRunner()
    published = runner.invoke(cli, ["publish", f"jsonl:{source}", "--bootstrap-servers", kafka_broker,
                                    "--topic-prefix", prefix, "--since", "2024-05-01T07:01:00Z", "--quiet"])
    assert published.exit_code == 0, published.output
    assert "published 4 events and 1 dead letters" in published.output  # 09:01..09:04 +02:00: since is inclusive

    listed = runner.invoke(cli, ["topics", "--bootstrap-servers", kafka_broker, "--format", "json"])
    assert listed.exit_code == 0, listed.output
    ends: dict[str, int] = {}
    for part in json.loads(listed.output):
        ends[part["topic"]] = ends.get(part["topic"], 0) + part["end_offset"]
    assert ends[f"{prefix}.raw.im"] == 4 and ends[f"{prefix}.deadletter"] == 1


def test_publish_with_unknown_scheme_is_one_line():
    result = CliRunner().invoke(cli, ["publish", "nosuch:/x", "--bootstrap-servers", "127.0.0.1:1"])
    assert result.exit_code != 0 and "unknown scheme 'nosuch'" in str(result.exception)
