"""WhatsApp chat export connector (``whatsapp:PATH``): the .txt that "Export chat" writes.

Both layouts are read: Android ``31/12/21, 22:01 - Name: text`` and iOS
``[31/12/21, 22:01:05] Name: text``, with 2- or 4-digit years, year-first
dates, ``/ . -`` separators, 12-hour clocks (``10:01 PM``, ``10:01 p. m.``,
narrow no-break spaces) and multi-line messages. Whether ``01/02`` is day
first is decided per file from the dates themselves (a part above 12, else
the reading that keeps the chat in order), or by ``?dayfirst=1|0``. Lines
without an author ("X created group", "You were added") are kept as system
events; "<Media omitted>" and attached-file lines become media references.
Exports carry no zone: ``?tz=Europe/Paris`` states it (UTC otherwise).
PATH is one .txt file or a folder of them. Reads only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Iterator

from memtape.connectors.base import Record, register
from memtape.connectors.sources._common import (
    LimitError,
    RecordError,
    checked_time,
    dead_letter,
    each_file,
    limits,
    open_binary,
    split_options,
    text_lines,
    undecodable,
    zone,
)
from memtape.schemas.records import RawEvent

_SCHEME = "whatsapp"
READ_SNIFF_CHARS = 4096  # enough of each line to see its date when deciding day-first
MAX_AUTHOR_CHARS = 80  # a longer "name" before ": " is a system sentence, not an author
_DATE = r"(?P<date>\d{1,4}[./-]\d{1,2}[./-]\d{1,4})"
_TIME = r"(?P<time>\d{1,2}[:.]\d{2}(?:[:.]\d{2})?)(?:[\s\u202f]*(?P<ampm>[aApP]\.?\s?[mM]\.?))?"
_HEADERS = (
    re.compile(rf"^[\u200e\u200f]?{_DATE},?\s{_TIME}\s[-\u2013]\s(?P<rest>.*)$"),
    re.compile(rf"^[\u200e\u200f]?\[{_DATE},?\s{_TIME}\]\s(?P<rest>.*)$"),
)
_ATTACHED = re.compile(r"<attached:\s*([^>]+)>|^(\S+\.\w{2,5}) \(file attached\)")
_OMITTED = re.compile(r"^[\u200e]?<?(media|image|video|audio|sticker|gif|document|contact card)\s+omitted>?$", re.I)


@dataclass
class _Pending:
    """The message being assembled while its continuation lines are read."""

    lineno: int
    when: datetime | None
    error: Exception | None
    rest: str
    lines: list[str] = field(default_factory=list)
    size: int = 0


def _header(line: str) -> re.Match | None:
    for pattern in _HEADERS:
        match = pattern.match(line)
        if match:
            return match
    return None


def _date_parts(text: str) -> tuple[int, int, int]:
    return tuple(int(p) for p in re.split(r"[./-]", text))  # type: ignore[return-value]


def _day_first(file: Path) -> bool:
    """Decide day-first from the dates of one file: a part above 12 settles it, else chat order does."""
    firsts: list[tuple[int, int, int]] = []
    with open_binary(file) as handle:
        for _, line, _ in text_lines(handle, READ_SNIFF_CHARS):
            match = _header(line)
            if match:
                a, b, c = _date_parts(match.group("date"))
                if a < 100:
                    firsts.append((a, b, c))
    if any(a > 12 for a, _, _ in firsts):
        return True
    if any(b > 12 for _, b, _ in firsts):
        return False

    def inversions(day_first: bool) -> int:
        keys = [(c, b, a) if day_first else (c, a, b) for a, b, c in firsts]
        return sum(1 for x, y in zip(keys, keys[1:]) if y < x)

    return inversions(True) <= inversions(False)


def _timestamp(match: re.Match, day_first: bool, tz: tzinfo) -> datetime:
    a, b, c = _date_parts(match.group("date"))
    if a >= 100:
        year, month, day = a, b, c
    else:
        day, month = (a, b) if day_first else (b, a)
        year = c + 2000 if c < 100 else c
    parts = [int(p) for p in re.split(r"[:.]", match.group("time"))]
    hour, minute, second = parts[0], parts[1], parts[2] if len(parts) > 2 else 0
    ampm = (match.group("ampm") or "").lower()
    if ampm.startswith("p") and hour < 12:
        hour += 12
    elif ampm.startswith("a") and hour == 12:
        hour = 0
    return checked_time(datetime(year, month, day, hour, minute, second), tz)


def _event(pending: _Pending, file: Path, tenant: str, conversation: str) -> RawEvent:
    name, sep, first = pending.rest.partition(": ")
    authored = bool(sep) and 0 < len(name) <= MAX_AUTHOR_CHARS
    text = "\n".join([first if authored else pending.rest, *pending.lines]).strip("\u200e").strip()
    attrs: dict = {}
    media_ref = None
    attached = _ATTACHED.search(text)
    if attached:
        media_ref = (attached.group(1) or attached.group(2)).strip()
        attrs["media"] = "attached"
    elif _OMITTED.match(text):
        attrs["media"] = "omitted"
    if not authored:
        attrs["subtype"] = "system"
    return RawEvent(
        tenant=tenant,
        source_kind="im",
        source=_SCHEME,
        source_id=f"{file.name}:{pending.lineno}",
        text=text,
        event_time=pending.when,
        conversation_id=conversation,
        sender=name.strip("\u200e ") if authored else None,
        media_ref=media_ref,
        payload=pending.rest + "".join("\n" + line for line in pending.lines),
        attrs=attrs,
    )


def _read_file(file: Path, tenant: str, options: dict[str, str], max_bytes: int) -> Iterator[Record]:
    tz = zone(options.get("tz"))
    day_first = options["dayfirst"] not in ("0", "false", "no") if "dayfirst" in options else _day_first(file)
    conversation = options.get("chat") or file.stem
    pending: _Pending | None = None
    orphan: tuple[int, list[str]] | None = None

    def finish(item: _Pending) -> Record:
        position = f"{file}:{item.lineno}"
        if item.error is not None:
            return dead_letter(tenant, _SCHEME, position, item.error, item.rest[:1024])
        if item.size > max_bytes:
            return dead_letter(tenant, _SCHEME, position, LimitError(f"message exceeds max_message_bytes ({max_bytes})"),
                               item.rest[:1024])
        try:
            return _event(item, file, tenant, conversation)
        except Exception as exc:  # a message that cannot be shaped must not stop the chat
            return dead_letter(tenant, _SCHEME, position, exc, item.rest[:1024])

    with open_binary(file) as handle:
        for lineno, line, oversize in text_lines(handle, max_bytes):
            if undecodable(line):
                yield dead_letter(tenant, _SCHEME, f"{file}:{lineno}", UnicodeError("line is not valid UTF-8"), line)
                continue
            match = _header(line)
            if match is None:
                if pending is None:
                    orphan = orphan or (lineno, [])
                    if len(orphan[1]) < 4:
                        orphan[1].append(line[:256])
                    continue
                pending.size += len(line) + 1 + (max_bytes if oversize else 0)
                if pending.size > max_bytes:
                    pending.lines.clear()
                else:
                    pending.lines.append(line)
                continue
            if orphan:
                yield dead_letter(tenant, _SCHEME, f"{file}:{orphan[0]}",
                                  RecordError("text before the first message header"), "\n".join(orphan[1]))
                orphan = None
            if pending is not None:
                yield finish(pending)
            try:
                when, error = _timestamp(match, day_first, tz), None
            except (ValueError, OverflowError) as exc:
                when, error = None, exc
            rest = match.group("rest")
            size = len(rest.encode("utf-8", "surrogateescape")) + (max_bytes if oversize else 0)
            pending = _Pending(lineno, when, error, rest, size=size)
    if pending is not None:
        yield finish(pending)
    if orphan:
        yield dead_letter(tenant, _SCHEME, f"{file}:{orphan[0]}",
                          RecordError("no WhatsApp message header in the file"), "\n".join(orphan[1]))


@register(_SCHEME, "im", "WhatsApp 'Export chat' .txt (Android or iOS layout)")
def read_whatsapp(path: str, tenant: str) -> Iterator[Record]:
    path, options = split_options(path)
    max_bytes = limits().max_message_bytes
    yield from each_file(path, tenant, _SCHEME, lambda file: _read_file(file, tenant, options, max_bytes),
                         accept={".txt"})
