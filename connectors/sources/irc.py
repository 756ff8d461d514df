"""IRC log connector (``irc:PATH``): ``[hh:mm] <nick> text`` lines, one file per channel-day.

Logs carry only the time of day, so the date comes from the file name
(``2004-11-15_03.ascii.txt``, ``#ubuntu.20041115.log``) or from ``?date=YYYY-MM-DD``;
a clock that runs backwards by more than an hour has wrapped: by twelve hours
while every hour seen is 1-12 (logs written with a 12-hour clock), else by a day.
``* nick waves`` lines are actions, ``=== ...`` and ``-!- ...`` lines (joins,
quits, nick changes) are system events stamped with the last time seen.
Logs carry no zone: ``?tz=`` states it (UTC otherwise). The conversation is
``?channel=`` or the file name. PATH is a file or a folder of logs. Reads only.
"""
from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Iterator

from memtape.connectors.base import Record, register
from memtape.connectors.sources._common import (
    LimitError,
    RecordError,
    TimeError,
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
from memtape.schemas.records import DeadLetter, RawEvent

_SCHEME = "irc"
MIDNIGHT_SLACK = timedelta(hours=1)  # a clock this far behind the previous line has wrapped round
HALF_DAY = timedelta(hours=12)
FULL_DAY = timedelta(days=1)
SNIFF_LINES = 20  # a file whose first lines hold no log line at all is reported once, not line by line
_LINE = re.compile(r"^\[(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?\]\s+(?P<rest>.*)$")
_SAY = re.compile(r"^<[@+%&~ ]?(?P<nick>[^>\s]+)>\s?(?P<text>.*)$")
_ACTION = re.compile(r"^\*\s+(?P<nick>\S+)\s+(?P<text>.*)$")
_SYSTEM = re.compile(r"^(?:===|-!-|\*\*\*)\s*(?P<text>.*)$")
_FILE_DATE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")


def _file_date(file: Path, options: dict[str, str]) -> date:
    if options.get("date"):
        try:
            return date.fromisoformat(options["date"])
        except ValueError as exc:
            raise TimeError(f"date={options['date']}: not YYYY-MM-DD") from exc
    for match in _FILE_DATE.finditer(file.name):
        try:
            return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        except ValueError:
            continue
    raise TimeError("no date in the file name; pass ?date=YYYY-MM-DD")


def _classify(rest: str) -> tuple[str | None, str, str | None]:
    """(nick, text, subtype) of the part after the timestamp, or of a whole untimed line."""
    for pattern, subtype in ((_SAY, None), (_ACTION, "action")):
        match = pattern.match(rest)
        if match:
            return match.group("nick"), match.group("text"), subtype
    system = _SYSTEM.match(rest)
    if system:
        return None, system.group("text"), "system"
    raise RecordError("not an IRC log line")


def _read_file(file: Path, tenant: str, options: dict[str, str], max_bytes: int) -> Iterator[Record]:
    day = _file_date(file, options)
    tz = zone(options.get("tz"))
    conversation = options.get("channel") or file.name.split(".")[0]
    last: datetime | None = None
    shift = timedelta(0)  # added when the clock wraps: 12 h for a 12-hour clock, else a day
    twelve_hour = True  # until an hour of 0 or above 12 shows a 24-hour clock
    held: list[DeadLetter] = []  # errors before the first good line: one file-level letter if no line is good
    good = False
    with open_binary(file) as handle:
        for lineno, line, oversize in text_lines(handle, max_bytes):
            try:
                if not line.strip():
                    continue
                if undecodable(line):
                    raise UnicodeError("line is not valid UTF-8")
                if oversize or len(line.encode("utf-8", "surrogateescape")) > max_bytes:
                    raise LimitError(f"line exceeds max_message_bytes ({max_bytes})")
                stamped = _LINE.match(line)
                nick, text, subtype = _classify(stamped.group("rest") if stamped else line)
                if stamped:
                    clock = time(int(stamped.group("h")), int(stamped.group("m")), int(stamped.group("s") or 0))
                    twelve_hour = twelve_hour and 1 <= clock.hour <= 12
                    when = datetime.combine(day, clock) + shift
                    if last is not None and when < last.replace(tzinfo=None) - MIDNIGHT_SLACK:
                        half = twelve_hour and when + HALF_DAY >= last.replace(tzinfo=None) - MIDNIGHT_SLACK
                        shift += HALF_DAY if half else FULL_DAY
                        when += HALF_DAY if half else FULL_DAY
                    last = checked_time(when, tz)
                elif subtype != "system":
                    raise RecordError("message line without a [hh:mm] time")
                event = RawEvent(
                    tenant=tenant,
                    source_kind="im",
                    source=_SCHEME,
                    source_id=f"{file.name}:{lineno}",
                    text=text,
                    event_time=last or checked_time(datetime.combine(day, time()) + shift, tz),
                    conversation_id=conversation,
                    sender=nick,
                    payload=line,
                    attrs={"subtype": subtype, "line": lineno} if subtype else {"line": lineno},
                )
            except Exception as exc:  # one line, whatever it holds, must not stop the log
                letter = dead_letter(tenant, _SCHEME, f"{file}:{lineno}", exc, line[:1024])
                if good:
                    yield letter
                    continue
                held.append(letter)
                if len(held) >= SNIFF_LINES:
                    break
                continue
            if not good:
                good = True
                yield from held
            yield event
    if not good and held:
        yield dead_letter(tenant, _SCHEME, str(file), RecordError(f"not an IRC log: {held[0].error}"),
                          held[0].raw)


@register(_SCHEME, "im", "IRC logs ('[hh:mm] <nick> text'), date from the file name or ?date=")
def read_irc(path: str, tenant: str) -> Iterator[Record]:
    path, options = split_options(path)
    max_bytes = limits().max_message_bytes
    yield from each_file(path, tenant, _SCHEME, lambda file: _read_file(file, tenant, options, max_bytes))
