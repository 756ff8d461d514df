"""What a newcomer sees: progress while a backfill runs, honest summaries, clear errors instead of empty answers."""
from __future__ import annotations

import io
import json
import shlex
import sys
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from memtape.cli import cli, main
from memtape.connectors.lance_store import Store
from memtape.errors import UnknownTenant, UserError
from memtape.pipelines.backfill import run_backfill
from memtape.pipelines.progress import Progress
from memtape.retriever import MemtapeRetriever
from memtape.service import add_token, create_app, load_tokens
from test_recall_api import make_memories

REPO = Path(__file__).resolve().parents[1]
CHAT = REPO / "samples" / "jsonl" / "team-chat.jsonl"


class _Log(io.StringIO):
    """stderr redirected to a file: not a terminal."""

    def isatty(self) -> bool:
        return False


def test_backfill_without_a_terminal_writes_progress_lines_with_records_and_rate(tmp_path: Path) -> None:
    log = _Log()
    with Progress("memtape backfill", stream=log, every_s=0.05):
        result = run_backfill([f"jsonl:{CHAT}"], "t", Store(str(tmp_path / "s")), derive_memories=False)
    lines = log.getvalue().splitlines()
    read = result.landed["raw_events"]
    assert read > 0 and f"reading sources: {read:,} records read" in lines[-1]
    assert all(line.startswith("memtape backfill: ") and ("records/s" in line or "rows/s" in line) for line in lines)


def test_a_rerun_says_what_is_new_and_what_was_already_stored_and_how_to_see_dead_letters(tmp_path: Path, monkeypatch,
                                                                                          capsys) -> None:
    home = str(tmp_path / "s")
    wrong = f"irc:{REPO / 'samples' / 'health' / 'labs' / 'observations.csv'}"  # not an IRC log: one dead letter
    first = CliRunner().invoke(cli, ["backfill", wrong, "--tenant", "o'brien", "--home", home])
    again = CliRunner().invoke(cli, ["backfill", wrong, "--tenant", "o'brien", "--home", home, "--format", "json"])

    assert first.exit_code == 0, first.output
    assert "new rows: 1 dead_letters" in first.stdout
    hint = first.stdout.split("see them with: ", 1)[1].strip()
    assert hint.startswith('memtape sql "SELECT ') and "FROM dead_letters" in hint
    program, *args = shlex.split(hint)  # as a shell splits it
    code, shown, _ = run_main([*args, "--format", "json"], monkeypatch, capsys)
    assert program == "memtape" and code == 0
    assert [r["source_uri"] for r in json.loads(shown)] == [wrong]
    summary = json.loads(again.stdout)
    assert summary["new"] == {"dead_letters": 0} and summary["already_stored"] == {"dead_letters": 1}
    assert summary["landed"] == {"dead_letters": 1} and "FROM dead_letters" in summary["dead_letters_command"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(str(tmp_path_factory.mktemp("feedback") / "store"))
    make_memories(store, "alice", [{"text": "Alice moved the book club to Tuesday evenings."}])
    make_memories(store, "bob", [{"text": "Bob repaired the bike.", "source_id": "b"}])
    return store


def test_recall_and_sql_on_an_unknown_tenant_fail_naming_the_known_ones(store: Store) -> None:
    for args in (["recall", "book club", "--tenant", "alcie"], ["sql", "SELECT * FROM memories", "--tenant", "alcie"]):
        result = CliRunner().invoke(cli, args + ["--home", store.home])
        assert isinstance(result.exception, UnknownTenant)
        assert "unknown tenant 'alcie'" in str(result.exception) and "known tenants: alice, bob" in str(result.exception)
    with pytest.raises(UnknownTenant, match="known tenants: alice, bob"):
        MemtapeRetriever("alcie", store=store).retrieve("book club")


def run_main(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """The ``memtape`` entry point in this process (its one-line error handling included): exit code, stdout, stderr."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["memtape", *args])
    with pytest.raises(SystemExit) as exited:
        main()
        sys.exit(0)
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def test_a_read_command_on_a_missing_store_fails_and_creates_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    missing = tmp_path / "mistyped-home"
    code, _, err = run_main(["recall", "book club", "--tenant", "alice", "--home", str(missing)], monkeypatch, capsys)
    assert code == 1
    assert err.strip() == f"error: no memtape store at {missing}: nothing has been backfilled there (check --home or MEMTAPE_HOME)"
    assert not missing.exists()
    with pytest.raises(UserError, match="no memtape store"):
        MemtapeRetriever("alice", store=Store(str(missing), create=False))
    assert not missing.exists()


def test_service_answers_404_for_a_tenant_without_data_and_declares_the_bearer_scheme(store: Store, tmp_path: Path) -> None:
    tokens_file = str(tmp_path / "tokens.toml")
    tokens = {tenant: add_token(tokens_file, tenant) for tenant in ("alice", "carol")}
    assert load_tokens(tokens_file) == tokens
    client = TestClient(create_app(store, tokens))
    missing = client.post("/v1/tenants/carol/recall", json={"query": "book club"},
                          headers={"Authorization": f"Bearer {tokens['carol']}"})
    assert missing.status_code == 404 and "bob" not in missing.text and "alice" not in missing.text
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer", "description": "The tenant's token from the service's token file."}
    assert {"HTTPBearer": []} in schema["paths"]["/v1/tenants/{tenant}/recall"]["post"]["security"]


def test_new_token_prints_a_token_the_service_accepts(tmp_path: Path) -> None:
    file = tmp_path / "tokens.toml"
    result = CliRunner().invoke(cli, ["serve", "--new-token", "O'Brien", "--tokens", str(file)])
    assert result.exit_code == 0, result.output
    assert load_tokens(str(file)) == {"O'Brien": result.stdout.strip()} and len(result.stdout.strip()) >= 32
    assert file.stat().st_mode & 0o077 == 0


def test_doctor_passes_without_a_broker_when_none_is_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMTAPE_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("MEMTAPE_CONFIG", str(tmp_path / "none.toml"))
    result = CliRunner().invoke(cli, ["doctor", "--home", str(tmp_path / "fresh"), "--format", "json"])
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    broker = checks["broker 127.0.0.1:9092"]
    if broker["ok"]:
        pytest.skip("a broker is listening on 127.0.0.1:9092 here")
    assert result.exit_code == 0, result.output
    assert not broker["required"] and "optional" in broker["detail"]
    assert not checks["store"]["required"] and not (tmp_path / "fresh").exists()


def test_eml_on_a_folder_without_mail_fails_in_one_line_without_beam_internals(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("not a message")
    code, _, err = run_main(["backfill", f"eml:{tmp_path / 'notes'}", "--home", str(tmp_path / "s")], monkeypatch, capsys)
    assert code == 1
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: {tmp_path / 'notes'}: no input files in folder"]


def test_the_package_metadata_raises_no_setuptools_deprecation_warning() -> None:
    from setuptools.config.pyprojecttoml import read_configuration

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_configuration(REPO / "pyproject.toml", expand=True)
    assert [str(w.message).splitlines()[0] for w in caught] == []
