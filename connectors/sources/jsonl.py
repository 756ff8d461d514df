"""Generic JSON Lines connector (``jsonl:PATH``) for any source without its own format.

Each line is one object with at least ``text``; recognised keys are ``id``,
``time`` (ISO 8601; a time without a zone is UTC), ``sender``, ``recipients``,
``conversation`` and ``kind`` (im, email, meeting or health; im by default).
The whole line is kept as the payload. PATH is a file or a folder of
``.jsonl`` files. Reads only.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from memtape.connectors.base import SOURCE_KINDS, Record, register
from memtape.connectors.sources._common import (
    LimitError,
    RecordError,
    check_text,
    dead_letter,
    each_file,
    limits,
    open_binary,
    parse_iso,
    text_lines,
    undecodable,
)
from memtape.schemas.records import RawEvent

_SCHEME = "jsonl"


def _parse_line(obj: object, tenant: str, file: Path, lineno: int, max_bytes: int) -> RawEvent:
    if not isinstance(obj, dict):
        raise RecordError("line is not a JSON object")
    text = obj.get("text")
    if not isinstance(text, str):
        raise RecordError("missing string field 'text'")
    kind = obj.get("kind", "im")
    if kind not in SOURCE_KINDS:
        raise RecordError(f"unknown kind {kind!r}")
    recipients = obj.get("recipients") or []
    return RawEvent(
        tenant=tenant,
        source_kind=kind,
        source=_SCHEME,
        source_id=str(obj.get("id") or f"{file.name}:{lineno}"),
        text=check_text(text, max_bytes),
        event_time=parse_iso(obj["time"]) if "time" in obj else None,
        conversation_id=str(obj.get("conversation") or file.stem),
        sender=str(obj["sender"]) if obj.get("sender") is not None else None,
        recipients=[str(r) for r in recipients] if isinstance(recipients, list) else [str(recipients)],
    )


def _read_file(file: Path, tenant: str, max_bytes: int) -> Iterator[Record]:
    with open_binary(file) as handle:
        for lineno, line, oversize in text_lines(handle, max_bytes):
            if not line.strip():
                continue
            try:
                if oversize:
                    raise LimitError(f"line exceeds max_message_bytes ({max_bytes})")
                if undecodable(line):
                    raise UnicodeError("line is not valid text in the file's encoding")
                event = _parse_line(json.loads(line), tenant, file, lineno, max_bytes)
                event.payload = line
                yield event
            except Exception as exc:  # one line, whatever it holds, must not stop the file
                yield dead_letter(tenant, _SCHEME, f"{file}:{lineno}", exc, line[:1024])


@register(_SCHEME, "im", "JSON Lines, one object with 'text' per line")
def read_jsonl(path: str, tenant: str) -> Iterator[Record]:
    max_bytes = limits().max_message_bytes
    yield from each_file(path, tenant, _SCHEME, lambda file: _read_file(file, tenant, max_bytes),
                         accept={".jsonl", ".ndjson"})
