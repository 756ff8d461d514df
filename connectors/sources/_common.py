"""Helpers every source connector shares: input files, URI options, limits, times and dead letters.

Connectors call these so that a bad record becomes a ``DeadLetter`` with the
same stage names everywhere, and so that every limit comes from
``memtape.config.LimitsConfig``. This module reads files only; it must not
write anywhere and registers no scheme.
"""
from __future__ import annotations

import codecs
import io
import os
import re
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from memtape.config import LimitsConfig, load_config
from memtape.connectors.base import SourceError
from memtape.schemas.records import DeadLetter, RawEvent

EARLIEST_EVENT = datetime(1800, 1, 1, tzinfo=timezone.utc)  # older dates are typing errors, not history
LATEST_EVENT_AHEAD = timedelta(days=5 * 366)  # planned care can be dated ahead; decades ahead cannot
MAX_ERROR_CHARS = 500
_NUMBER_RUN = re.compile(r"(\d+)")
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_ESCAPE_ANY_BYTE = "memtape.escape-any-byte"


def _escape_any_byte(exc: UnicodeError) -> tuple[str, int]:
    """Like ``surrogateescape``, but also for bytes under 0x80, which a UTF-16 text cut at an odd length ends with."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = exc.object[exc.start:exc.end]
    return "".join(chr(0xDC80 | b) for b in bad), exc.end


codecs.register_error(_ESCAPE_ANY_BYTE, _escape_any_byte)


class RecordError(ValueError):
    """One record cannot be used; ``stage`` names the step that refused it."""

    stage = "connector.parse"


class LimitError(RecordError):
    stage = "connector.limit"


class TimeError(RecordError):
    stage = "connector.time"


class ArchiveError(RecordError):
    stage = "connector.archive"


def limits() -> LimitsConfig:
    """The configured limits (file and ``MEMTAPE_LIMITS_*``), defaults when the config is unreadable."""
    try:
        return load_config().limits
    except (OSError, ValueError):
        return LimitsConfig()


def split_options(path: str) -> tuple[str, dict[str, str]]:
    """``chat.txt?tz=Europe/Paris&dayfirst=0`` -> ("chat.txt", {...}); a path that exists keeps its '?'."""
    base, sep, query = path.partition("?")
    if not sep or os.path.exists(path):
        return path, {}
    return base, {k.lower(): v for k, v in parse_qsl(query, keep_blank_values=True)}


def natural_key(path: Path) -> list[object]:
    """Sort key that puts ``2.`` before ``10.``, so folders stream in the order people number them."""
    return [int(part) if part.isdigit() else part.lower() for part in _NUMBER_RUN.split(str(path))]


def input_files(path: str, accept: Iterable[str] | None = None, skip_dirs: Iterable[str] = ()) -> list[Path]:
    """The files of a source path in natural order; a folder is walked, hidden entries skipped.

    ``accept`` is a set of lower-case suffixes (".eml"); None accepts every file.
    Raises ``SourceError`` when the path does not exist or holds no file.
    """
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise SourceError(f"{path}: no such file or folder")
    suffixes = {s.lower() for s in accept} if accept is not None else None
    skipped = set(skip_dirs)
    depth_limit = limits().max_nesting_depth
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in skipped and depth < depth_limit]
        for name in files:
            if name.startswith("."):
                continue
            if suffixes is None or Path(name).suffix.lower() in suffixes:
                found.append(Path(folder) / name)
    if not found:
        raise SourceError(f"{path}: no input files in folder")
    return sorted(found, key=natural_key)


def outside_folder(file: Path, root: Path) -> str | None:
    """Why a file found under folder ``root`` must not be read (a link leading out, not a regular file), or None."""
    if not root.is_dir():
        return None
    try:
        target = file.resolve(strict=True)
        if not target.is_relative_to(root.resolve(strict=True)):
            return "symbolic link leads outside the source folder"
        if not target.is_file():
            return "not a regular file"
    except (OSError, RuntimeError) as exc:  # a dangling link or a link loop
        return f"cannot resolve the file ({getattr(exc, 'strerror', None) or exc})"
    return None


def each_file(path: str, tenant: str, source: str, read_file: Callable[[Path], Iterator[RawEvent | DeadLetter]],
              accept: Iterable[str] | None = None, skip_dirs: Iterable[str] = (),
              first: Callable[[Path], bool] | None = None) -> Iterator[RawEvent | DeadLetter]:
    """The records of every input file of ``path``, one file at a time, so that no file can stop the others.

    An empty file, a file reached through a link out of the folder, and any
    exception a file's reader raises become a dead letter naming the file; the
    next file is then read. Files that ``first`` picks are read before the rest.
    """
    root = Path(path)
    files = input_files(path, accept, skip_dirs)
    for file in sorted(files, key=lambda f: not first(f)) if first else files:
        why = outside_folder(file, root)
        if why:
            yield dead_letter(tenant, source, str(file), RecordError(why))
            continue
        try:
            empty = empty_file_letter(tenant, source, file)
            if empty:
                yield empty
                continue
            yield from read_file(file)
        except Exception as exc:  # one file, whatever it holds, must not stop the source
            yield dead_letter(tenant, source, str(file), exc)


def open_binary(file: Path) -> BinaryIO:
    """Open a file for reading, or stop with one line naming it and the reason."""
    try:
        return file.open("rb")
    except OSError as exc:
        raise SourceError(f"{file}: cannot open ({exc.strerror or exc})") from exc


def read_bounded(handle: BinaryIO, limit: int, what: str) -> bytes:
    """Read at most ``limit`` bytes, failing instead of loading something larger."""
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise LimitError(f"{what} is larger than the {limit}-byte limit")
    return data


def check_text(text: str, limit: int) -> str:
    """Refuse a message whose text exceeds ``max_message_bytes`` (checked in UTF-8 bytes)."""
    if len(text) > limit or len(text.encode("utf-8", "surrogatepass")) > limit:
        raise LimitError(f"message text exceeds max_message_bytes ({limit})")
    return text


def zone(name: str | None) -> tzinfo:
    """A zone from ``UTC``, ``+02:00`` or an IANA name; UTC when none is given."""
    if not name or name.strip().upper() in ("UTC", "Z", "GMT"):
        return timezone.utc
    if name.startswith(" "):  # "?tz=+02:00" arrives with its '+' decoded to a space
        name = "+" + name.strip()
    match = _OFFSET.match(name.strip())
    if match:
        sign = -1 if match.group(1) == "-" else 1
        return timezone(sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SourceError(f"tz={name}: unknown time zone") from exc


def checked_time(when: datetime | None, default_zone: tzinfo = timezone.utc) -> datetime:
    """An aware event time inside the plausible range; naive times take ``default_zone``."""
    if when is None:
        raise TimeError("missing date")
    if when.tzinfo is None or when.utcoffset() is None:
        when = when.replace(tzinfo=default_zone)
    now = datetime.now(timezone.utc)
    if not EARLIEST_EVENT <= when <= now + LATEST_EVENT_AHEAD:
        raise TimeError(f"date out of range: {when.isoformat()}")
    return when


def parse_iso(value: object, default_zone: tzinfo = timezone.utc) -> datetime:
    """An ISO 8601 date or date-time string as a checked aware datetime."""
    if not isinstance(value, str) or not value.strip():
        raise TimeError(f"missing or non-string date {value!r}"[:MAX_ERROR_CHARS])
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise TimeError(f"unparseable date {value!r}"[:MAX_ERROR_CHARS]) from exc
    return checked_time(when, default_zone)


def from_epoch(value: object) -> datetime:
    """Seconds since the epoch (int, float or numeric string, as Slack and Telegram write them) in UTC."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
        when = datetime.fromtimestamp(seconds, timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise TimeError(f"bad epoch time {value!r}"[:MAX_ERROR_CHARS]) from exc
    return checked_time(when)


def one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_ERROR_CHARS]


def dead_letter(tenant: str, source: str, position: str, exc: BaseException, raw: bytes | str | None = None) -> DeadLetter:
    """A dead letter whose stage says which step refused the record and whose error is one line."""
    if isinstance(exc, RecordError):
        stage = exc.stage
    elif isinstance(exc, UnicodeError):
        stage = "connector.decode"
    else:
        stage = "connector.parse"
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    return DeadLetter(tenant, source, stage, one_line(f"{type(exc).__name__}: {exc}"), position=position, raw=raw)


def undecodable(text: str) -> bool:
    """True when text read with ``surrogateescape`` held bytes that were not valid in its encoding."""
    return _ESCAPED_BYTE.search(text) is not None


def empty_file_letter(tenant: str, source: str, file: Path) -> DeadLetter | None:
    """A dead letter for an input file with no bytes at all (often a failed or partial export)."""
    try:
        if file.stat().st_size:
            return None
    except OSError as exc:
        raise SourceError(f"{file}: cannot open ({exc.strerror or exc})") from exc
    return dead_letter(tenant, source, str(file), RecordError("empty file"))


READ_PIECE_CHARS = 1 << 20  # a longer line is read in pieces, so no line is held whole


def text_lines(handle: BinaryIO, max_chars: int) -> Iterator[tuple[int, str, bool]]:
    """(line number, line without its newline, oversize) for a text file, streamed.

    A line longer than ``max_chars`` is cut there and flagged, the rest of it
    skipped unread into memory. The encoding is UTF-16 when a BOM says so, else
    UTF-8 (BOM dropped); bytes that do not decode survive as surrogate escapes
    so the caller can report the one bad line (see ``undecodable``).
    """
    start = handle.read(4)
    handle.seek(0)
    encoding = "utf-16" if start[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    text = io.TextIOWrapper(handle, encoding=encoding, errors=_ESCAPE_ANY_BYTE, newline=None)
    lineno = 0
    while True:
        piece = text.readline(READ_PIECE_CHARS)
        if not piece:
            return
        lineno += 1
        parts, size = [piece], len(piece)
        while not piece.endswith("\n"):
            piece = text.readline(READ_PIECE_CHARS)
            if not piece:
                break
            size += len(piece)
            if size <= max_chars + 1:
                parts.append(piece)
        length = size - 1 if piece.endswith("\n") else size
        yield lineno, "".join(parts).rstrip("\n")[:max_chars], length > max_chars
