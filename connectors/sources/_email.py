"""Turn one RFC 5322 message into a ``RawEvent``: headers, body text, attachments and thread.

Shared by the mbox, Maildir, .eml and IMAP connectors, which only differ in
how they find message bytes. Encoded headers and charsets are decoded
leniently (mail in the wild mislabels them), HTML-only bodies become text,
attachments are listed in ``attrs`` and never inlined, and ``Threader`` gives
each message a conversation id from Message-ID / In-Reply-To / References,
falling back to the normalised subject for mail that lacks those headers.
This module parses bytes it is given; it opens nothing and writes nothing.
"""
from __future__ import annotations

import email
import email.errors
import re
from collections import OrderedDict
from datetime import datetime
from email.header import Header, decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser

from memtape.connectors.sources._common import LimitError, RecordError, TimeError, check_text, checked_time
from memtape.schemas.records import RawEvent

MAX_REMEMBERED_THREADS = 200_000  # message ids and subjects kept for threading; oldest forgotten first
_REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|wg|sv|vs|antw|tr|rif)\s*(\[\d+\]|\(\d+\))?\s*[:：]\s*)+", re.I)
_LIST_TAG = re.compile(r"^\s*(\[[^\]]{1,40}\])\s*")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_PLAIN_LIST = re.compile(r"^[^\s\"(),:;<>@\\]+@[^\s\"(),:;<>@\\]+(\s*,\s*[^\s\"(),:;<>@\\]+@[^\s\"(),:;<>@\\]+)*\s*,?\s*$")
_HTML_BLOCKS = {"p", "br", "div", "tr", "li", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "hr"}
_HTML_HIDDEN = {"script", "style", "head", "title"}
_BLANK_RUNS = re.compile(r"\n{3,}")
_SPACE_RUNS = re.compile(r"[ \t\r\f\v\xa0]+")


class _HtmlText(HTMLParser):
    """Collect the visible text of an HTML body, with line breaks where blocks end."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _HTML_HIDDEN:
            self._hidden += 1
        elif tag in _HTML_BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HTML_HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _HTML_BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    lines = (_SPACE_RUNS.sub(" ", line).strip() for line in "".join(parser.parts).split("\n"))
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def _bytes_text(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset, else UTF-8, else Latin-1: mail often mislabels its bytes."""
    if charset and charset.lower() not in ("unknown-8bit", "x-unknown"):
        try:
            return data.decode(charset, errors="replace")
        except LookupError:
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def header_text(value: object) -> str:
    """A header as readable text: RFC 2047 words decoded, raw 8-bit bytes guessed, folding removed."""
    if value is None:
        return ""
    if isinstance(value, Header):
        text = "".join(_bytes_text(b, cs) if isinstance(b, bytes) else b for b, cs in decode_header(value))
    else:
        text = str(value)
    if "=?" in text:
        try:
            text = str(make_header(decode_header(text)))
        except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
            pass
    return " ".join(text.split())


def normalised_subject(subject: str) -> str:
    """``Re: [list] RE: Fwd: Plan`` -> ``[list] plan``: the subject a whole thread shares."""
    text = _REPLY_PREFIX.sub("", subject)
    tag = _LIST_TAG.match(text)
    if tag:
        text = tag.group(1) + " " + _REPLY_PREFIX.sub("", text[tag.end():])
    return " ".join(text.split()).casefold()


class Threader:
    """Assign thread ids as messages stream past, remembering a bounded number of ids and subjects.

    A message joins the thread of any message it references or that referenced
    it; a message without reply headers joins the thread of the first message
    seen with the same normalised subject ("Re:", "Fwd:" ... stripped), which
    is how header-less mail such as the Enron release can still be threaded.
    """

    def __init__(self) -> None:
        self._by_id: OrderedDict[str, str] = OrderedDict()
        self._by_subject: OrderedDict[str, str] = OrderedDict()

    @staticmethod
    def _remember(table: OrderedDict[str, str], key: str, thread: str) -> None:
        table[key] = thread
        table.move_to_end(key)
        if len(table) > MAX_REMEMBERED_THREADS:
            table.popitem(last=False)

    def thread_of(self, message_id: str, in_reply_to: str, references: list[str], subject: str) -> str:
        linked = references + ([in_reply_to] if in_reply_to else [])
        norm = normalised_subject(subject)
        thread = self._by_id.get(message_id) if message_id else None
        for ref in linked:
            thread = thread or self._by_id.get(ref)
        if thread is None and linked:
            thread = linked[0]
        if thread is None and norm:
            thread = self._by_subject.get(norm)
        thread = thread or message_id or f"subject:{norm}"
        for key in [message_id, *linked]:
            if key:
                self._remember(self._by_id, key, thread)
        if norm and norm not in self._by_subject:
            self._remember(self._by_subject, norm, thread)
        return thread


def _ids(value: object) -> list[str]:
    return _MESSAGE_ID.findall(header_text(value))


def _addresses(msg: Message, *names: str) -> list[tuple[str, str]]:
    """(display name, lower-cased address) pairs; bare comma lists skip the slow RFC 5322 parser."""
    pairs: list[tuple[str, str]] = []
    for value in (header_text(v) for name in names for v in (msg.get_all(name) or [])):
        if _PLAIN_LIST.match(value):
            pairs += [("", addr.strip()) for addr in value.split(",")]
        else:
            pairs += getaddresses([value])
    return [(name, addr.strip().lower()) for name, addr in pairs if addr.strip()]


def _event_time(msg: Message, fallback: datetime | None) -> datetime:
    """The Date header with its zone; else the newest Received stamp; else the caller's fallback."""
    candidates = [header_text(msg.get("Date"))]
    candidates += [header_text(r).rpartition(";")[2] for r in (msg.get_all("Received") or [])[:1]]
    for text in candidates:
        if not text.strip():
            continue
        try:
            return checked_time(parsedate_to_datetime(text))
        except (TypeError, ValueError, IndexError, OverflowError) as exc:
            if isinstance(exc, TimeError):
                raise
    if fallback is not None:
        return checked_time(fallback)
    raise TimeError(f"missing or unparseable Date header {candidates[0]!r}"[:200])


def _walk(part: Message, depth: int, max_depth: int):
    if depth > max_depth:
        raise LimitError(f"MIME parts nested deeper than {max_depth}")
    yield part
    if part.is_multipart():
        for child in part.get_payload() or []:
            if isinstance(child, Message):
                yield from _walk(child, depth + 1, max_depth)


def _body_and_attachments(msg: Message, max_depth: int) -> tuple[str, list[dict]]:
    plain: str | None = None
    html: str | None = None
    attachments: list[dict] = []
    for part in _walk(msg, 0, max_depth):
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        filename = header_text(part.get_filename()) if part.get_filename() else None
        disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        payload = part.get_payload(decode=True)
        payload = payload if isinstance(payload, bytes) else b""
        if filename or disposition == "attachment" or not ctype.startswith("text/"):
            attachments.append({"filename": filename, "content_type": ctype, "size": len(payload)})
        elif ctype == "text/plain" and plain is None:
            plain = _bytes_text(payload, part.get_content_charset())
        elif ctype == "text/html" and html is None:
            html = _bytes_text(payload, part.get_content_charset())
    if plain is not None and plain.strip():
        return plain.replace("\r\n", "\n").strip(), attachments
    if html is not None:
        return html_to_text(html), attachments
    return (plain or "").strip(), attachments


def parse_message(
    raw: bytes,
    *,
    tenant: str,
    source: str,
    fallback_id: str,
    location: str,
    threader: Threader,
    max_message_bytes: int,
    max_depth: int,
    fallback_time: datetime | None = None,
    extra_attrs: dict | None = None,
) -> RawEvent:
    """One message's bytes as a ``RawEvent``; raises ``RecordError`` (or a parse error) when unusable."""
    if not raw.strip():
        raise RecordError("empty message")
    msg = email.message_from_bytes(raw)
    if not msg.keys():
        raise RecordError("no header fields: not an RFC 5322 message")
    message_id = (_ids(msg.get("Message-ID")) or [""])[0]
    subject = header_text(msg.get("Subject"))
    senders = _addresses(msg, "From") or _addresses(msg, "Sender", "Return-Path")
    from_name, from_address = senders[0] if senders else ("", "")
    from_name = header_text(from_name) or header_text(msg.get("X-From")).split("<")[0].strip()
    to = [addr for _, addr in _addresses(msg, "To")]
    cc = [addr for _, addr in _addresses(msg, "Cc")]
    in_reply_to = (_ids(msg.get("In-Reply-To")) or [""])[0]
    references = _ids(msg.get("References"))
    event_time = _event_time(msg, fallback_time)
    body, attachments = _body_and_attachments(msg, max_depth)
    text = check_text(body or subject, max_message_bytes)
    attrs = {
        "subject": subject,
        "message_id": message_id,
        "in_reply_to": in_reply_to,
        "references": references,
        "from_address": from_address,
        "from_name": from_name,
        "to": to,
        "cc": cc,
        "attachments": attachments,
        **(extra_attrs or {}),
    }
    named = [a for a in attachments if a["filename"]]
    return RawEvent(
        tenant=tenant,
        source_kind="email",
        source=source,
        source_id=message_id or fallback_id,
        text=text,
        event_time=event_time,
        conversation_id=threader.thread_of(message_id, in_reply_to, references, subject),
        sender=from_address or None,
        recipients=list(dict.fromkeys(to + cc)),
        media_ref=f"{location}#{named[0]['filename']}" if named else None,
        payload=raw.decode("utf-8", "replace") if len(raw) <= max_message_bytes else None,
        attrs=attrs,
    )
