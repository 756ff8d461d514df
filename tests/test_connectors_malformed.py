"""Bad input never crashes a connector: each case lands in dead letters and the good records around it survive.

The committed corpus is ``fixtures/connectors/malformed`` (made by its
``make_malformed.py``); inputs too large or hostile to commit (a 2 MB message,
zip-slip and zip-bomb archives) are generated here.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from memtape.connectors.base import SourceError, connectors, read_source
from memtape.schemas import conform
from memtape.schemas.records import DeadLetter, RawEvent

CORPUS = Path(__file__).resolve().parent / "fixtures" / "connectors" / "malformed"
MANIFEST: dict[str, int] = json.loads((CORPUS / "manifest.json").read_text())
HUGE = 2_000_000  # above the default max_message_bytes (1 MB)


def split(uri: str) -> tuple[list[RawEvent], list[DeadLetter]]:
    records = list(read_source(uri, "t"))
    return [r for r in records if isinstance(r, RawEvent)], [r for r in records if isinstance(r, DeadLetter)]


def assert_reported(letters: list[DeadLetter], scheme: str) -> None:
    assert letters, "expected at least one dead letter"
    for letter in letters:
        assert letter.source == scheme and letter.position and letter.stage.startswith("connector") and letter.error
        assert "\n" not in letter.error
    conform("dead_letters", [letter.to_row() for letter in letters])


def test_corpus_covers_every_file_connector_with_over_100_cases():
    assert len(MANIFEST) >= 100
    schemes = {case.split("/")[0] for case in MANIFEST}
    assert schemes == set(connectors()) - {"imap", "audio"}


@pytest.mark.parametrize("case", sorted(MANIFEST))
def test_malformed_case_lands_in_dead_letters_and_good_records_survive(case):
    scheme = case.split("/")[0]
    good, letters = split(f"{scheme}:{CORPUS / case}")
    assert_reported(letters, scheme)
    assert sorted(r.text for r in good if "good" in r.text) == sorted(r.text for r in good)
    assert len(good) == MANIFEST[case]


def _huge_inputs(tmp_path: Path) -> dict[str, Path]:
    big = "x" * HUGE
    files = {
        "whatsapp": ("chat.txt", f"01/02/21, 10:00 - Ann: good one\n01/02/21, 10:01 - Ann: {big}\n01/02/21, 10:02 - Bob: good two\n"),
        "irc": ("2021-02-01.log", f"[10:00] <ann> good one\n[10:01] <ann> {big}\n[10:02] <bob> good two\n"),
        "jsonl": ("lines.jsonl", "\n".join(json.dumps({"text": t}) for t in ("good one", big, "good two"))),
        "telegram": ("result.json", json.dumps({"messages": [
            {"id": i, "date_unixtime": "1600000000", "from": "a", "text": t} for i, t in enumerate(("good one", big, "good two"))]})),
        "fhir": ("bulk.ndjson", "\n".join(json.dumps({"resourceType": "Observation", "id": str(i), "code": {"text": t},
                                                       "effectiveDateTime": "2020-01-01"}) for i, t in enumerate(("good one", big, "good two")))),
        "labs-csv": ("labs.csv", f"date,test,value\n2020-01-01,good one,1\n2020-01-02,{big},2\n2020-01-03,good two,3\n"),
    }
    out = {}
    for scheme, (name, text) in files.items():
        (tmp_path / scheme).mkdir()
        out[scheme] = tmp_path / scheme / name
        out[scheme].write_text(text)
    mails = tmp_path / "maildir" / "cur"
    mails.mkdir(parents=True)
    for n, body in enumerate(("good one", big, "good two")):
        (mails / f"{n}.msg").write_text(f"Message-ID: <{n}@x>\nDate: Mon, 14 Sep 2020 10:00:00 +0200\nFrom: a@x\n\n{body}\n")
    out["maildir"] = mails.parent
    out["mbox"] = tmp_path / "box.mbox"
    out["mbox"].write_bytes(b"".join(b"From a\n" + m.read_bytes() + b"\n" for m in sorted(mails.iterdir())))
    slack = tmp_path / "slack" / "general"
    slack.mkdir(parents=True)
    (slack / "2020-09-13.json").write_text(json.dumps([
        {"user": "U1", "text": t, "ts": f"16000000{i}0.000100"} for i, t in enumerate(("good one", big, "good two"))]))
    out["slack"] = slack.parent
    return out


def test_a_huge_single_message_is_dead_lettered_in_every_connector(tmp_path):
    for scheme, path in _huge_inputs(tmp_path).items():
        good, letters = split(f"{scheme}:{path}")
        assert len(good) == 2 and "good one" in good[0].text and "good two" in good[1].text, scheme
        assert_reported(letters, scheme)
        assert all(len(letter.to_row()["raw"] or b"") <= 64 * 1024 for letter in letters)


def _slack_zip(path: Path, extra: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("users.json", json.dumps([{"id": "U1", "real_name": "Ann"}]))
        zf.writestr("general/2020-09-13.json", json.dumps([{"user": "U1", "text": "good one", "ts": "1600000000.1"}]))
        for name, data in extra.items():
            zf.writestr(name, data)
    return path


def test_zip_slip_entries_are_refused_and_the_rest_is_read(tmp_path):
    day = json.dumps([{"user": "U1", "text": "escaped", "ts": "1600000001.1"}]).encode()
    archive = _slack_zip(tmp_path / "export.zip", {"../../evil/2020-09-13.json": day, "/abs/2020-09-13.json": day,
                                                    "C:\\win/2020-09-13.json": day})
    good, letters = split(f"slack:{archive}")
    assert [r.text for r in good] == ["good one"] and good[0].sender == "Ann"
    assert_reported(letters, "slack")
    assert {letter.stage for letter in letters} == {"connector.archive"} and len(letters) == 3
    assert not (tmp_path.parent / "evil").exists()


def test_zip_bomb_like_entries_are_refused_without_expanding(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMTAPE_LIMITS_MAX_ATTACHMENT_BYTES", "1000000")
    bomb = b"[" + b" " * 5_000_000 + b"]"
    archive = _slack_zip(tmp_path / "bomb.zip", {"general/2020-09-14.json": bomb})
    good, letters = split(f"slack:{archive}")
    assert [r.text for r in good] == ["good one"]
    assert_reported(letters, "slack")
    assert "max_attachment_bytes" in letters[0].error


def test_zip_past_the_total_expansion_or_entry_count_is_reported(tmp_path, monkeypatch):
    archive = _slack_zip(tmp_path / "many.zip", {f"general/2020-10-{d:02d}.json": b"[]" for d in range(1, 20)})
    monkeypatch.setenv("MEMTAPE_LIMITS_MAX_ZIP_ENTRIES", "10")
    good, letters = split(f"slack:{archive}")
    assert not good and "max_zip_entries" in letters[0].error
    monkeypatch.setenv("MEMTAPE_LIMITS_MAX_ZIP_ENTRIES", "1000")
    with zipfile.ZipFile(archive) as zf:
        first_two = sum(info.file_size for info in zf.infolist()[:2])
    monkeypatch.setenv("MEMTAPE_LIMITS_MAX_ZIP_EXPANDED_BYTES", str(first_two + 4))
    good, letters = split(f"slack:{archive}")
    assert [r.text for r in good] == ["good one"]
    assert len(letters) == 17 and all("max_zip_expanded_bytes" in letter.error for letter in letters)


def test_a_corrupt_zip_member_is_reported_and_the_others_read(tmp_path):
    archive = _slack_zip(tmp_path / "crc.zip", {"random/2020-09-14.json": json.dumps(
        [{"user": "U1", "text": "zzzz" * 500, "ts": "1600000002.1"}])})
    data = bytearray(archive.read_bytes())
    start = data.index(b"random/2020-09-14.json") + len("random/2020-09-14.json")
    data[start + 5:start + 40] = b"\x00" * 35  # clobber compressed bytes of that member
    archive.write_bytes(bytes(data))
    good, letters = split(f"slack:{archive}")
    assert [r.text for r in good] == ["good one"]
    assert_reported(letters, "slack")


@pytest.mark.parametrize("scheme", ["slack", "whatsapp", "telegram", "irc", "jsonl", "mbox", "maildir", "eml", "fhir", "labs-csv"])
def test_a_source_that_cannot_be_opened_stops_with_one_line_naming_it(scheme, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SourceError) as err:
        list(read_source(f"{scheme}:{missing}", "t"))
    assert str(missing) in str(err.value) and "\n" not in str(err.value)


def test_a_file_that_is_not_a_zip_stops_slack_with_one_line(tmp_path):
    fake = tmp_path / "export.zip"
    fake.write_bytes(b"not a zip at all")
    with pytest.raises(SourceError, match="not a readable zip archive"):
        list(read_source(f"slack:{fake}", "t"))


def test_imap_without_a_password_stops_with_one_line(monkeypatch):
    monkeypatch.delenv("MEMTAPE_IMAP_PASSWORD", raising=False)
    with pytest.raises(SourceError, match="MEMTAPE_IMAP_PASSWORD"):
        list(read_source("imap://ann@mail.example.org/INBOX", "t"))
