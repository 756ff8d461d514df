"""Mail connectors: Enron Maildir spot checks, .eml/mbox parsing and threading, IMAP against a local server."""
from __future__ import annotations

import shutil
import socketserver
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from memtape.connectors.base import SourceError, read_source
from memtape.schemas import conform
from memtape.schemas.records import DeadLetter, RawEvent

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ENRON = SHARED / "email" / "skilling-j"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "connectors" / "email"
needs_enron = pytest.mark.skipif(not ENRON.exists(), reason="../shared/data absent: Enron skilling-j Maildir not available")


def events(uri: str) -> list[RawEvent]:
    return [r for r in read_source(uri, "t") if isinstance(r, RawEvent)]


@pytest.fixture(scope="module")
def enron() -> dict[str, RawEvent]:
    return {e.attrs["message_id"]: e for e in events(f"maildir:{ENRON}")} if ENRON.exists() else {}


@needs_enron
def test_enron_message_keeps_sender_zone_subject_and_recipients(enron):
    event = enron["<28180264.1075840149664.JavaMail.evans@thyme>"]  # inbox/10.
    assert event.sender == "glenn.dubin@enron.com"
    assert event.event_time == datetime(2001, 4, 16, 20, 45, tzinfo=timezone(timedelta(hours=-7)))
    assert event.event_time.utcoffset() == timedelta(hours=-7)
    assert event.attrs["subject"] == "HAN Opportunity-SnapStream Media:"
    assert event.attrs["from_name"] == "Glenn Dubin"  # from X-From: the Enron From header has no name
    assert event.recipients[:2] == ["gdubin@houstontech.org", "amaniar@houstontech.org"]
    assert event.text.startswith("Houston Angel Network members:")
    assert event.source_id == "<28180264.1075840149664.JavaMail.evans@thyme>"


@needs_enron
def test_enron_replies_without_reply_headers_thread_by_subject(enron):
    replies = [enron["<10904951.1075845514123.JavaMail.evans@thyme>"], enron["<10261113.1075845513941.JavaMail.evans@thyme>"]]
    assert replies[0].attrs["in_reply_to"] == "" and replies[0].attrs["references"] == []
    assert replies[0].conversation_id == replies[1].conversation_id
    murdock = [e for e in enron.values() if "telephone call with jerry murdock" in e.attrs["subject"].lower()]
    assert len(murdock) == 8 and len({e.conversation_id for e in murdock}) == 1


@needs_enron
def test_every_enron_message_file_lands_with_an_aware_time(enron):
    assert len(enron) == 1496  # 1,497 files; the 'genie' git listing among them is not a message
    assert all(e.event_time.tzinfo is not None and e.sender for e in enron.values())
    rows = conform("raw_events", [e.to_row() for e in list(enron.values())[:50]])
    assert rows.num_rows == 50


def test_eml_decodes_encoded_headers_charsets_and_references_attachments():
    plan, reply, news, budget, budget_reply = events(f"eml:{FIXTURES}")
    assert plan.sender == "renee.dupont@example.org"
    assert plan.attrs["from_name"] == "Renée Dupont"
    assert plan.attrs["subject"] == "Plan für März"
    assert plan.attrs["to"] == ["bob@example.org", "carol@example.org"] and plan.attrs["cc"] == ["dan@example.org"]
    assert plan.recipients == ["bob@example.org", "carol@example.org", "dan@example.org"]
    assert plan.text == "Hallo Bob, der Plan für März steht im Anhang."  # text/plain wins over HTML
    assert plan.attrs["attachments"] == [{"filename": "plan.pdf", "content_type": "application/pdf", "size": 48}]
    assert plan.media_ref.endswith("01-plan.eml#plan.pdf") and "JVBER" not in plan.text
    assert plan.event_time.utcoffset() == timedelta(hours=1)
    assert reply.text == "Danke, sieht gut aus. Grüße, Bob"  # ISO-8859-1 body
    assert reply.conversation_id == plan.conversation_id == "<plan-1@example.org>"
    assert news.text == "Weekly digest\n\nItem one & item two\n\nfirst\n\nsecond"  # HTML only: no style, no script
    assert budget_reply.conversation_id == budget.conversation_id  # "RE: Fwd:" stripped, no reply headers


def test_mbox_streams_messages_with_offsets_and_undoes_from_quoting(tmp_path):
    mails = sorted(FIXTURES.glob("*.eml"))
    box = tmp_path / "archive.mbox"
    with box.open("wb") as out:
        for mail in mails:
            out.write(b"From someone@example.org Tue Mar  2 09:15:00 2021\n")
            out.write(mail.read_bytes().replace(b"Can we review", b"From here on, can we review").replace(
                b"From here", b">From here") + b"\n")
    records = list(read_source(f"mbox:{box}", "t"))
    assert [r.attrs["message_id"] for r in records] == [
        "<plan-1@example.org>", "<plan-2@example.org>", "<news-1@example.org>", "<budget-1@example.org>", "<budget-2@example.org>"]
    assert records[3].text == "From here on, can we review the budget on Friday?"
    assert records[0].attrs["subject"] == "Plan für März"
    assert records[1].conversation_id == "<plan-1@example.org>"


def test_mbox_message_without_date_takes_the_separator_time(tmp_path):
    box = tmp_path / "old.mbox"
    box.write_bytes(b"From ann@example.org Sat Jan  3 01:05:34 1996\nFrom: ann@example.org\nSubject: hi\n\nundated\n")
    (event,) = events(f"mbox:{box}")
    assert event.event_time == datetime(1996, 1, 3, 1, 5, 34, tzinfo=timezone.utc)


def test_since_cursor_keeps_only_newer_mail():
    since = datetime(2021, 3, 3, tzinfo=timezone.utc)
    kept = [r for r in read_source(f"eml:{FIXTURES}", "t", since=since)]
    assert [r.attrs["message_id"] for r in kept] == ["<news-1@example.org>", "<budget-1@example.org>", "<budget-2@example.org>"]


# a tiny read-only IMAP server, enough for imaplib: LOGIN, EXAMINE, UID SEARCH/FETCH, LOGOUT
class _ImapHandler(socketserver.StreamRequestHandler):
    messages: dict[int, bytes] = {}
    password = "s3cret"
    commands: list[str] = []

    def send(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")

    def handle(self) -> None:
        self.send("* OK IMAP4rev1 test server ready")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            tag, _, rest = line.decode().strip().partition(" ")
            verb = rest.split(" ", 1)[0].upper()
            self.commands.append(rest)
            if verb == "CAPABILITY":
                self.send("* CAPABILITY IMAP4rev1")
                self.send(f"{tag} OK done")
            elif verb == "LOGIN":
                ok = rest.split(" ", 2)[2].strip('"') == self.password
                self.send(f"{tag} OK logged in" if ok else f"{tag} NO bad password")
            elif verb == "EXAMINE":
                self.send(f"* {len(self.messages)} EXISTS")
                self.send("* OK [UIDVALIDITY 77] ok")
                self.send(f"{tag} OK [READ-ONLY] examined")
            elif rest.upper().startswith("UID SEARCH"):
                self.send("* SEARCH " + " ".join(str(u) for u in self.messages))
                self.send(f"{tag} OK done")
            elif rest.upper().startswith("UID FETCH") and "RFC822.SIZE" in rest:
                for seq, (uid, raw) in enumerate(self.messages.items(), 1):
                    self.send(f"* {seq} FETCH (UID {uid} RFC822.SIZE {len(raw)})")
                self.send(f"{tag} OK done")
            elif rest.upper().startswith("UID FETCH"):
                uid = int(rest.split()[2])
                raw = self.messages[uid]
                seq = list(self.messages).index(uid) + 1
                self.wfile.write(f"* {seq} FETCH (UID {uid} BODY[] {{{len(raw)}}}\r\n".encode() + raw + b")\r\n")
                self.send(f"{tag} OK done")
            elif verb == "LOGOUT":
                self.send("* BYE")
                self.send(f"{tag} OK bye")
                return
            else:
                self.send(f"{tag} BAD unsupported")


@pytest.fixture
def imap_server(monkeypatch):
    mails = sorted(FIXTURES.glob("*.eml"))
    _ImapHandler.messages = {10 + i: m.read_bytes() for i, m in enumerate(mails)}
    _ImapHandler.messages[99] = b"junk without headers"
    _ImapHandler.commands = []
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _ImapHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("MEMTAPE_IMAP_PASSWORD", _ImapHandler.password)
    yield f"imap://bob%40example.org@127.0.0.1:{server.server_address[1]}/INBOX?tls=none"
    server.shutdown()
    server.server_close()


def test_imap_reads_by_uid_read_only_and_threads(imap_server):
    records = list(read_source(imap_server, "t"))
    mails = [r for r in records if isinstance(r, RawEvent)]
    (letter,) = [r for r in records if isinstance(r, DeadLetter)]
    assert [m.attrs["uid"] for m in mails] == [10, 11, 12, 13, 14]
    assert mails[0].attrs["subject"] == "Plan für März" and mails[1].conversation_id == "<plan-1@example.org>"
    assert letter.position.endswith(";UIDVALIDITY=77/;UID=99") and letter.stage == "connector.parse"
    assert any(c.upper().startswith("EXAMINE") for c in _ImapHandler.commands)
    assert all("BODY.PEEK[]" in c for c in _ImapHandler.commands if c.upper().startswith("UID FETCH") and "SIZE" not in c)
    assert not any(c.split()[0].upper() in ("STORE", "EXPUNGE", "SELECT", "COPY") for c in _ImapHandler.commands)


def test_imap_wrong_password_is_one_line_source_error(imap_server, monkeypatch):
    monkeypatch.setenv("MEMTAPE_IMAP_PASSWORD", "wrong")
    with pytest.raises(SourceError) as err:
        list(read_source(imap_server, "t"))
    assert "cannot open mailbox" in str(err.value) and "\n" not in str(err.value)


def test_maildir_skips_tmp_and_reads_cur_and_new(tmp_path):
    for sub, name in (("cur", "01-plan.eml"), ("new", "02-reply.eml"), ("tmp", "03-html-only.eml")):
        (tmp_path / sub).mkdir()
        shutil.copy(FIXTURES / name, tmp_path / sub / f"1.{sub}")
    assert [e.attrs["folder"] for e in events(f"maildir:{tmp_path}")] == ["cur", "new"]
