"""Generic JSON Lines connector (``jsonl:PATH``) for any source without its own format.

Each line is one object with at least ``text``; recognised keys are ``id``,
``time`` (ISO 8601), ``sender``, ``recipients``, ``conversation`` and
``kind`` (im, email, meeting or health; im by default). Unknown keys stay in the payload.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Iterator

from memtape.connectors.base import SOURCE_KINDS, Record, SourceError, register
from memtape.schemas.records import DeadLetter, RawEvent

_SCHEME = "jsonl"


def _files(path: str) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        return sorted(q for q in p.rglob("*.jsonl") if q.is_file())
    if p.is_file():
        return [p]
    raise SourceError(f"{path}: no such file or folder")


def _parse_line(obj: object, tenant: str, file: Path, lineno: int) -> RawEvent:
    if not isinstance(obj, dict):
        raise ValueError("line is not a JSON object")
    text = obj.get("text")
    if not isinstance(text, str):
        raise ValueError("missing string field 'text'")
    kind = obj.get("kind", "im")
    if kind not in SOURCE_KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    when = obj.get("time")
    event_time = datetime.fromisoformat(when) if isinstance(when, str) else None
    recipients = obj.get("recipients") or []
    return RawEvent(
        tenant=tenant,
        source_kind=kind,
        source=_SCHEME,
        source_id=str(obj.get("id") or f"{file.name}:{lineno}"),
        text=text,
        event_time=event_time,
        conversation_id=obj.get("conversation") or file.stem,
        sender=obj.get("sender"),
        recipients=[str(r) for r in recipients] if isinstance(recipients, list) else [str(recipients)],
    )


@register(_SCHEME, "im", "JSON Lines, one object with 'text' per line")
def read_jsonl(path: str, tenant: str) -> Iterator[Record]:
    for file in _files(path):
        try:
            handle = file.open("rb")
        except OSError as exc:
            raise SourceError(f"{file}: cannot open ({exc.strerror})") from exc
        with handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    event = _parse_line(json.loads(line.decode("utf-8")), tenant, file, lineno)
                    event.payload = line.decode("utf-8").rstrip("\n")
                    yield event
                except (ValueError, UnicodeDecodeError) as exc:
                    yield DeadLetter(tenant, _SCHEME, "connector", f"{type(exc).__name__}: {exc}",
                                     position=f"{file}:{lineno}", raw=line)
