"""Nothing one input holds stops a run or vanishes silently (issue 20's bad-input findings).

Each test writes the hostile input it needs into a temporary folder and reads
it through the real connector with ``read_source``.
"""
from __future__ import annotations

import json
import os
import tracemalloc

import pyarrow as pa
import pytest

from memtape.commands._common import print_table
from memtape.connectors.base import read_source
from memtape.connectors.sources import jsonl
from memtape.schemas.records import DeadLetter, RawEvent


def split(uri: str) -> tuple[list[RawEvent], list[DeadLetter]]:
    records = list(read_source(uri, "t"))
    return [r for r in records if isinstance(r, RawEvent)], [r for r in records if isinstance(r, DeadLetter)]


def line(i: int, text: str | None = None, id_: str | None = None) -> str:
    return json.dumps({"id": id_ or f"m{i}", "text": text or f"message {i}", "time": "2021-03-15T10:00:00Z"})


def test_utf16_be_json_lines_of_odd_length_is_a_dead_letter_not_a_crash(tmp_path):
    data = "\ufeff" + line(1) + "\n" + line(2) + "\n"
    (tmp_path / "chat.jsonl").write_bytes(data.encode("utf-16-be") + b"x")  # one stray byte past the last code unit
    events, letters = split(f"jsonl:{tmp_path}")
    assert [e.text for e in events] == ["message 1", "message 2"]
    assert len(letters) == 1 and "not valid text" in letters[0].error


@pytest.mark.parametrize("scheme, name", [("jsonl", "leak.jsonl"), ("maildir", "leak"), ("eml", "leak.eml"),
                                          ("slack", "general/2021-03-15.json")])
def test_a_symlink_out_of_a_folder_source_is_a_dead_letter_and_its_target_is_not_read(tmp_path, scheme, name):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text(line(1, "SECRETMARKER") + "\n")
    folder = tmp_path / "source"
    link = folder / name
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    (folder / "kept.jsonl").write_text(line(2, "kept") + "\n")
    records = list(read_source(f"{scheme}:{folder}", "t"))
    letters = [r for r in records if isinstance(r, DeadLetter) and r.position.endswith(name)]
    assert len(letters) == 1 and "outside the source folder" in letters[0].error
    assert not any("SECRETMARKER" in (getattr(r, "text", None) or "") + repr(getattr(r, "raw", b"")) for r in records)
    if scheme == "jsonl":
        assert [r.text for r in records if isinstance(r, RawEvent)] == ["kept"]


def test_a_dangling_link_in_a_folder_is_a_dead_letter_and_the_next_file_is_read(tmp_path):
    (tmp_path / "a.jsonl").symlink_to(tmp_path / "gone.jsonl")
    (tmp_path / "b.jsonl").write_text(line(1) + "\n")
    events, letters = split(f"jsonl:{tmp_path}")
    assert [e.text for e in events] == ["message 1"]
    assert len(letters) == 1 and letters[0].position.endswith("a.jsonl") and "cannot resolve" in letters[0].error


def test_any_exception_on_one_record_is_a_dead_letter_and_the_next_record_lands(tmp_path, monkeypatch):
    parse = jsonl._parse_line

    def fragile(obj, *args):
        if obj.get("text") == "poison":
            raise KeyError("an unexpected parser bug")
        return parse(obj, *args)

    monkeypatch.setattr(jsonl, "_parse_line", fragile)
    (tmp_path / "a.jsonl").write_text("\n".join([line(1), line(2, "poison"), line(3)]) + "\n")
    events, letters = split(f"jsonl:{tmp_path / 'a.jsonl'}")
    assert [e.text for e in events] == ["message 1", "message 3"]
    assert len(letters) == 1 and letters[0].error.startswith("KeyError") and letters[0].position.endswith(":2")


def test_a_second_record_with_an_earlier_id_is_a_dead_letter_and_the_first_lands(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join([line(1, "first", "same"), line(2, "second", "same"),
                                                 line(3, "first", "same"), line(4)]) + "\n")
    events, letters = split(f"jsonl:{tmp_path / 'a.jsonl'}")
    assert [e.text for e in events] == ["first", "first", "message 4"]  # an identical copy is the same record
    assert len(letters) == 1 and letters[0].stage == "connector.duplicate" and b"second" in letters[0].raw
    assert "'same'" in letters[0].error


def test_an_unterminated_csv_quote_costs_only_its_own_row(tmp_path):
    rows = ["date,test,value", "2020-01-01,glucose,5.1", '2020-01-02,"broken,7', "2020-01-03,sodium,140",
            "2020-01-04,potassium,4.2"]
    (tmp_path / "labs.csv").write_text("\n".join(rows) + "\n")
    events, letters = split(f"labs-csv:{tmp_path / 'labs.csv'}")
    assert [e.source_id for e in events] == ["labs.csv:2", "labs.csv:4", "labs.csv:5"]
    assert len(letters) == 1 and letters[0].position.endswith(":3") and "unterminated quote" in letters[0].error


def test_csv_output_escapes_cells_a_spreadsheet_would_run_as_formulas():
    table = pa.table({"text": ['=HYPERLINK("http://x","y")', "+1", "-cmd", "@SUM(A1)", "plain", None],
                      "n": [-1, 2, 3, 4, 5, 6]})
    lines: list[str] = []
    print_table(table, "csv", lines.append)
    body = lines[0].splitlines()
    assert body[1:] == ['"\'=HYPERLINK(""http://x"",""y"")",-1', '"\'+1",2', '"\'-cmd",3', '"\'@SUM(A1)",4',
                        '"plain",5', ",6"]


def test_a_slack_users_json_of_nested_empty_lists_is_read_in_bounded_memory(tmp_path):
    user = "[" + ",".join(["[]"] * 3000) + "]"
    (tmp_path / "users.json").write_text("[" + ",".join([user] * 150) + "]")  # 1.35 MB, 450 000 lists
    (tmp_path / "general").mkdir()
    (tmp_path / "general" / "2021-03-15.json").write_text(json.dumps([{"type": "message", "user": "U1", "text": "hi",
                                                                        "ts": "1615802400.000100"}]))
    tracemalloc.start()
    try:
        events, _ = split(f"slack:{tmp_path}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [e.text for e in events] == ["hi"]
    assert peak < 8_000_000, f"peak {peak} bytes for a 1.35 MB users.json"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_in_a_folder_is_refused_unread(tmp_path):
    os.mkfifo(tmp_path / "pipe.jsonl")
    (tmp_path / "b.jsonl").write_text(line(1) + "\n")
    events, letters = split(f"jsonl:{tmp_path}")
    assert [e.text for e in events] == ["message 1"]
    assert len(letters) == 1 and "not a regular file" in letters[0].error
