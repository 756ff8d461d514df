"""Fuzz targets, one per parser, shared by the CI test and by ``make fuzz`` (benchmarks/fuzz.py).

A target renders a document from chunks: valid records, each carrying a unique
marker, mixed with junk (format-aware tokens, arbitrary JSON values, raw
bytes, deep nesting). The document is read through the real connector with
``read_source``. A finding is any exception escaping the connector, any record
that cannot land (a row that does not conform to its Arrow schema, a dead
letter without a one-line reason), or, while the document is unmutated, a valid
record missing from the output (lost) or present twice (duplicate). Cases are
also byte-mutated or replaced by raw bytes; then only the first two are checked.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
import traceback
import wave
from pathlib import Path
from typing import Callable

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from memtape.connectors.base import read_source
from memtape.schemas import conform
from memtape.schemas.records import DeadLetter, RawEvent

TENANT = "fuzz"
_REPO = Path(__file__).resolve().parents[1]
MAX_CHUNKS = 12
EXAMPLES_PER_ROUND = 25  # a round is one hypothesis run; the clock is checked between rounds
_MARK = "goodmark{:04d}q"
_BOMS = (b"\xff\xfe", b"\xfe\xff")  # a UTF-16 BOM at the start re-decodes the whole file: not junk's job


@dataclasses.dataclass(frozen=True)
class Case:
    data: bytes
    expected: tuple[str, ...] | None  # markers that must come out exactly once; None after mutation


@dataclasses.dataclass(frozen=True)
class Target:
    """One parser under fuzz: how to render valid records, what junk to mix in, where the bytes go."""

    name: str
    scheme: str
    filename: str  # the fuzzed file, relative to the target's folder
    good: Callable[[int, str], bytes]  # (index, marker) -> one valid record
    junk: st.SearchStrategy[bytes]
    frame: Callable[[list[bytes]], bytes]  # chunks -> the whole document
    uri_path: str = ""  # what the URI names, relative to the folder; "" means the fuzzed file
    isolates: bool = True  # junk cannot damage the valid records around it
    first_good: bool = False  # the document must open with a valid record (see irc)
    setup: Callable[[Path], None] = lambda folder: None

    def cases(self) -> st.SearchStrategy[Case]:
        """Structured documents, byte-mutated ones, and plain random bytes."""
        return st.one_of(self._structured(), self._structured().flatmap(_mutated), st.binary(max_size=2048).map(
            lambda data: Case(data, None)))

    def _structured(self) -> st.SearchStrategy[Case]:
        chunk = st.one_of(st.just(None), self.junk)  # None stands for a valid record
        return st.lists(chunk, max_size=MAX_CHUNKS).map(self._render)

    def _render(self, chunks: list[bytes | None]) -> Case:
        if self.first_good:
            chunks = [None, *chunks]
        markers, rendered = [], []
        for chunk in chunks:
            if chunk is None:
                markers.append(_MARK.format(len(markers)))
                rendered.append(self.good(len(markers) - 1, markers[-1]))
            else:
                rendered.append(chunk)
        whole = self.isolates or chunks == [None]
        return Case(self.frame(rendered), tuple(markers) if whole else None)


@dataclasses.dataclass
class Outcome:
    events: int
    letters: int


class Finding(AssertionError):
    """Connector output that breaks the contract (not landable, or rows lost or duplicated)."""

    def __init__(self, message: str, lost: int = 0, duplicates: int = 0) -> None:
        super().__init__(message)
        self.lost, self.duplicates = lost, duplicates


def _mutated(case: Case) -> st.SearchStrategy[Case]:
    op = st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate"]), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8))
    return st.lists(op, min_size=1, max_size=4).map(lambda ops: Case(_apply(case.data, ops), None))


def _apply(data: bytes, ops: list[tuple[str, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for name, pos, payload in ops:
        at = pos % (len(buf) + 1)
        if name == "flip" and at < len(buf):
            buf[at] ^= payload[0] or 0xFF
        elif name == "insert":
            buf[at:at] = payload
        elif name == "delete":
            del buf[at:at + len(payload) * 8]
        elif name == "truncate":
            del buf[at:]
    return bytes(buf)


# junk
def _token_junk(tokens: list[str]) -> st.SearchStrategy[bytes]:
    """Lines assembled from the format's own punctuation, numbers and free text, plus raw bytes."""
    piece = st.one_of(st.sampled_from(tokens), st.integers(-5, 99_999).map(str), st.text(max_size=12))
    text = st.lists(piece, max_size=14).map("".join).map(lambda s: s.encode("utf-8", "surrogatepass"))
    return st.one_of(text, st.binary(max_size=160)).filter(lambda b: not b.startswith(_BOMS))


_STRANGE_STRINGS = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2)


def _json_junk(keys: list[str]) -> st.SearchStrategy[bytes]:
    """Any JSON value whose object keys are mostly the format's own, plus deep nesting and odd numbers."""
    scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), _STRANGE_STRINGS)
    key = st.one_of(st.sampled_from(keys), st.text(max_size=6))
    value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(key, inner, max_size=6)), max_leaves=16)
    deep = st.integers(1, 3000).map(lambda n: ("[" * n + "]" * n).encode())
    odd = st.sampled_from([b"1e999", b"-1e999", b"123456789012345678901234567890", b'"\\ud800"', b"-0.0"])
    return st.one_of(value.map(lambda v: json.dumps(v).encode()), deep, odd)


def _json_array(chunks: list[bytes]) -> bytes:
    return b"[" + b",".join(chunks) + b"]"


def _lines(chunks: list[bytes]) -> bytes:
    return b"\n".join(chunks) + b"\n"


def _nested_mime(depth: int) -> bytes:
    """A message whose multipart parts nest ``depth`` deep, around one plain-text leaf."""
    body = b"Content-Type: text/plain\n\nleaf\n"
    for level in range(depth):
        boundary = f"b{level}".encode()
        body = (b"Content-Type: multipart/mixed; boundary=" + boundary + b"\n\n--" + boundary + b"\n" + body
                + b"\n--" + boundary + b"--\n")
    return b"Message-ID: <nest@x>\nDate: Mon, 15 Mar 2021 10:00:00 +0000\nFrom: a@x\nMIME-Version: 1.0\n" + body


def _mail(i: int, marker: str) -> bytes:
    return (f"Message-ID: <{marker}@example.org>\nDate: Mon, 15 Mar 2021 10:{i % 60:02d}:00 +0000\n"
            f"From: Ann <ann@example.org>\nTo: bob@example.org\nSubject: note {i}\n\n{marker}\n").encode()


_MAIL_TOKENS = ["\n", "\n\n", ": ", "From: ", "Date: ", "Subject: ", "Message-ID: <", ">", "In-Reply-To: ", "References: ",
                "Content-Type: multipart/alternative; boundary=", "Content-Type: text/html; charset=", "--", "=?utf-8?b?",
                "=?iso-8859-1?q?", "?=", "Content-Transfer-Encoding: base64\n", "quoted-printable", "<p>", "</p>",
                "<script>", "Mon, 15 Mar 2021 10:00:00 +0000", "Received: x; ", "Content-Disposition: attachment; filename="]
_MAIL_JUNK = st.one_of(_token_junk(_MAIL_TOKENS), st.integers(0, 90).map(_nested_mime))
_MBOX_SEPARATOR = b"From someone Mon Mar 15 10:00:00 2021\n"

_SLACK_KEYS = ["type", "user", "text", "ts", "subtype", "message", "edited", "files", "file", "attachments", "thread_ts",
               "bot_id", "user_profile", "comment", "username", "real_name", "pretext", "title", "fallback", "name"]
_TELEGRAM_KEYS = ["id", "type", "date", "date_unixtime", "from", "from_id", "actor", "action", "title", "text", "photo",
                  "file", "thumbnail", "poll", "question", "location_information", "contact_information",
                  "reply_to_message_id", "edited", "edited_unixtime", "media_type", "forwarded_from"]
_FHIR_KEYS = ["resource", "resourceType", "id", "code", "coding", "system", "display", "text", "valueQuantity", "value",
              "unit", "valueCodeableConcept", "valueString", "component", "referenceRange", "low", "high", "interpretation",
              "effectiveDateTime", "effectivePeriod", "start", "end", "issued", "subject", "reference", "encounter",
              "period", "type", "reasonCode", "name", "given", "family", "birthDate", "onsetDateTime", "onsetPeriod",
              "abatementDateTime", "clinicalStatus", "medicationCodeableConcept", "medicationReference",
              "dosageInstruction", "vaccineCode", "occurrenceDateTime", "performedDateTime", "result", "conclusion",
              "criticality", "recordedDate", "authoredOn", "status", "gender", "deceasedDateTime"]
_FHIR_TYPES = ["Patient", "Encounter", "Observation", "Condition", "MedicationRequest", "Immunization", "Procedure",
               "DiagnosticReport", "AllergyIntolerance", "Claim"]


def _fhir_resource_junk() -> st.SearchStrategy[bytes]:
    """Resources of the mapped types with fields of random shape: the mappers' inputs at their worst."""
    scalar = st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=12), st.sampled_from(["2021", "2021-03", "x"]))
    value = st.recursive(scalar, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(_FHIR_KEYS), inner, max_size=4)), max_leaves=10)
    fields = st.dictionaries(st.sampled_from(_FHIR_KEYS), value, max_size=8)
    return st.tuples(st.sampled_from(_FHIR_TYPES), fields).map(
        lambda tf: json.dumps({**tf[1], "resourceType": tf[0]}).encode())


def _observation(i: int, marker: str) -> dict:
    return {"resourceType": "Observation", "id": marker, "status": "final", "code": {"text": marker},
            "valueQuantity": {"value": 1.5 + i, "unit": "mg"}, "effectiveDateTime": "2021-03-15T10:00:00Z",
            "subject": {"reference": "Patient/p1"}}


def _silent_wav(folder: Path) -> None:
    with wave.open(str(folder / "talk.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(b"\0\0" * 1600)


def _slack_users(folder: Path) -> None:
    (folder / "users.json").write_text(json.dumps([{"id": "U1", "real_name": "Ann"}]))


_CUE_TOKENS = ["-->", " --> ", ":", ".", ",", "\n", "\n\n", "WEBVTT", "NOTE ", "STYLE", "<v ", "<v.loud Bob>", ">", "</v>",
               "&amp;", "&#", "<b>", "00:00:01.000 --> 00:00:02.000\n", "99:99:99,999", "\ufeff"]

TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("whatsapp", "whatsapp", "chat.txt",
           lambda i, m: f"15/03/21, 10:{i % 60:02d} - Ann: {m}".encode(),
           _token_junk(["/", ".", "-", ", ", ":", " - ", "[", "] ", " PM", " a. m.", "\u202f", "\u200e", ": ", "\n",
                        "\r", "<Media omitted>", "<attached: ", ">", " (file attached)", "31/12/21, 22:01 - ",
                        "[2021-12-31, 10:01:05] "]),
           _lines),
    Target("irc", "irc", "2021-03-15.log",
           lambda i, m: f"[10:{i % 60:02d}] <ann> {m}".encode(),
           _token_junk(["[", "]", ":", "<", "> ", "@", "* ", "=== ", "-!- ", "*** ", "\n", "\r", "[12:00] ",
                        "[23:59:59] <nick> ", "[1:5] "]),
           _lines, first_good=True),
    Target("jsonl", "jsonl", "lines.jsonl",
           lambda i, m: json.dumps({"id": m, "text": m, "time": "2021-03-15T10:00:00Z", "sender": "ann"}).encode(),
           st.one_of(_json_junk(["id", "text", "time", "sender", "recipients", "conversation", "kind"]),
                     _token_junk(["{", "}", '"', ":", ","])),
           _lines),
    Target("slack", "slack", "general/2021-03-15.json",
           lambda i, m: json.dumps({"type": "message", "user": "U1", "text": m, "ts": f"1615802{i:03d}.000100"}).encode(),
           _json_junk(_SLACK_KEYS), _json_array, uri_path=".", setup=_slack_users),
    Target("telegram", "telegram", "result.json",
           lambda i, m: json.dumps({"id": 100_000 + i, "type": "message", "date": "2021-03-15T10:00:00",
                                    "date_unixtime": "1615802400", "from": "Ann", "text": [{"type": "bold", "text": m}]}).encode(),
           _json_junk(_TELEGRAM_KEYS),
           lambda chunks: b'{"name": "chat", "type": "personal_chat", "id": 42, "messages": ' + _json_array(chunks) + b"}"),
    Target("fhir_bundle", "fhir", "bundle.json",
           lambda i, m: json.dumps({"resource": _observation(i, m)}).encode(),
           st.one_of(_json_junk(_FHIR_KEYS), _fhir_resource_junk().map(lambda r: b'{"resource": ' + r + b"}")),
           lambda chunks: b'{"resourceType": "Bundle", "type": "collection", "entry": ' + _json_array(chunks) + b"}"),
    Target("fhir_ndjson", "fhir", "bulk.ndjson",
           lambda i, m: json.dumps(_observation(i, m)).encode(),
           st.one_of(_fhir_resource_junk(), _json_junk(_FHIR_KEYS), _token_junk(["{", "}", '"', ":"])),
           _lines),
    Target("mail_mbox", "mbox", "box.mbox",
           lambda i, m: _MBOX_SEPARATOR + _mail(i, m),
           _MAIL_JUNK.map(lambda junk: _MBOX_SEPARATOR + junk),
           lambda chunks: b"\n\n".join(chunks) + b"\n"),
    Target("mail_eml", "eml", "message.eml", _mail, _MAIL_JUNK, b"".join, isolates=False),
    Target("subtitles_vtt", "audio", "talk.vtt",
           lambda i, m: f"{i + 1}\n00:00:{i % 60:02d}.000 --> 00:00:{i % 60:02d}.500\n<v Ann>{m}</v>".encode(),
           _token_junk(_CUE_TOKENS),
           lambda chunks: b"WEBVTT\n\n" + b"\n\n".join(chunks) + b"\n", uri_path="talk.wav", setup=_silent_wav),
    Target("subtitles_srt", "audio", "talk.srt",
           lambda i, m: f"{i + 1}\n00:00:{i % 60:02d},000 --> 00:00:{i % 60:02d},500\n{m}".encode(),
           _token_junk(_CUE_TOKENS),
           lambda chunks: b"\n\n".join(chunks) + b"\n", uri_path="talk.wav", setup=_silent_wav),
)}


def prepare(target: Target, folder: Path) -> None:
    """Create the target's fixed surroundings (a users.json, a silent recording) once."""
    (folder / target.filename).parent.mkdir(parents=True, exist_ok=True)
    target.setup(folder)


def check(target: Target, data: bytes, expected: tuple[str, ...] | None, folder: Path) -> Outcome:
    """Read ``data`` through the connector in a prepared ``folder``; raise on a crash or a broken contract."""
    (folder / target.filename).write_bytes(data)
    uri = f"{target.scheme}:{folder / (target.uri_path or target.filename)}"
    records = list(read_source(uri, TENANT))
    events = [r for r in records if isinstance(r, RawEvent)]
    letters = [r for r in records if isinstance(r, DeadLetter)]
    if len(events) + len(letters) != len(records):
        raise Finding("connector yielded something that is neither a RawEvent nor a DeadLetter")
    for letter in letters:
        if not (letter.stage.startswith("connector") and letter.error and letter.position) or "\n" in letter.error:
            raise Finding(f"dead letter without a one-line reason and position: {letter!r}"[:500])
    conform("raw_events", [e.to_row() for e in events])
    conform("dead_letters", [d.to_row() for d in letters])
    lost = duplicates = 0
    for marker in expected or ():
        found = sum(1 for e in events if e.text and marker in e.text)
        lost += found == 0
        duplicates += found > 1
    if lost or duplicates:
        raise Finding(f"{lost} valid records lost, {duplicates} duplicated", lost, duplicates)
    return Outcome(len(events), len(letters))


@dataclasses.dataclass
class Crash:
    data: bytes
    error: str
    signature: str  # exception type and innermost frame: one per distinct bug


@dataclasses.dataclass
class Stats:
    target: str
    executions: int = 0
    events: int = 0
    letters: int = 0
    lost: int = 0
    duplicates: int = 0
    slowest_s: float = 0.0
    crashes: list[Crash] = dataclasses.field(default_factory=list)

    def summary(self) -> dict:
        return {"target": self.target, "executions": self.executions, "findings": len(self.crashes),
                "events": self.events, "dead_letters": self.letters, "rows_lost": self.lost,
                "duplicates": self.duplicates, "slowest_ms": round(self.slowest_s * 1000, 1)}


def _signature(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    inner = next((f for f in reversed(frames) if f.filename.startswith(str(_REPO)) and "/.venv/" not in f.filename), None)
    where = f"{Path(inner.filename).name}:{inner.lineno}" if inner else "?"
    return f"{type(exc).__name__} at {where}"


def fuzz(target: Target, seconds: float, examples: int = EXAMPLES_PER_ROUND) -> Stats:
    """Run ``target`` for about ``seconds`` in random hypothesis rounds; each distinct crash is kept once, shrunk."""
    stats = Stats(target.name)
    end = time.monotonic() + seconds
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target.name}-") as tmp:
        folder = Path(tmp)
        prepare(target, folder)
        while time.monotonic() < end:
            _round(target, folder, stats, examples, None)
    return stats


def fuzz_seeded(target: Target, seeds: list[int], examples: int = EXAMPLES_PER_ROUND) -> Stats:
    """One hypothesis round per seed: the same cases on every run, so the test suite is deterministic."""
    stats = Stats(target.name)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target.name}-") as tmp:
        folder = Path(tmp)
        prepare(target, folder)
        for number in seeds:
            _round(target, folder, stats, examples, number)
    return stats


def _round(target: Target, folder: Path, stats: Stats, examples: int, seed_number: int | None) -> None:
    last: list[tuple[bytes, BaseException]] = []

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=(Phase.generate, Phase.shrink), report_multiple_bugs=False)
    @given(target.cases())
    def run(case: Case) -> None:
        started = time.perf_counter()
        stats.executions += 1
        try:
            outcome = check(target, case.data, case.expected, folder)
        except Exception as exc:
            last.append((case.data, exc))
            raise
        finally:
            stats.slowest_s = max(stats.slowest_s, time.perf_counter() - started)
        stats.events += outcome.events
        stats.letters += outcome.letters

    if seed_number is not None:
        run = seed(seed_number)(run)
    try:
        run()
    except Exception:
        data, exc = last[-1]
        if isinstance(exc, Finding):
            stats.lost += exc.lost
            stats.duplicates += exc.duplicates
        signature = _signature(exc)
        if signature not in {c.signature for c in stats.crashes}:
            stats.crashes.append(Crash(data, f"{type(exc).__name__}: {exc}"[:300], signature))


REGRESSIONS = Path(__file__).resolve().parent / "fixtures" / "fuzz_regressions"


def regression_cases() -> list[tuple[str, Path]]:
    """(target name, file) for every committed crashing input."""
    return [(folder.name, file) for folder in sorted(REGRESSIONS.glob("*")) if folder.is_dir()
            for file in sorted(folder.iterdir()) if file.is_file()]


def replay(target: Target, data: bytes) -> Outcome:
    with tempfile.TemporaryDirectory(prefix=f"replay-{target.name}-") as tmp:
        folder = Path(tmp)
        prepare(target, folder)
        return check(target, data, None, folder)
