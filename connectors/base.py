"""The contract every source connector follows, and the registry of URI schemes.

A connector reads one source (a file, a folder, an archive or a mailbox) and
yields ``RawEvent`` records one at a time, or ``DeadLetter`` records for input
it cannot parse, so a bad record never stops the good ones around it. A
connector must not write anywhere: landing is the sink's job.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from datetime import datetime
from typing import Callable, Iterator, Protocol

from memtape.errors import UserError
from memtape.schemas.records import DeadLetter, RawEvent

Record = RawEvent | DeadLetter
SOURCE_KINDS = ("im", "email", "meeting", "health")
_SURROGATE = re.compile("[\ud800-\udfff]")


class SourceError(UserError):
    """The source cannot be opened at all; the message is one line naming it and why."""


class Reader(Protocol):
    def __call__(self, path: str, tenant: str) -> Iterator[Record]: ...


@dataclasses.dataclass(frozen=True)
class Connector:
    scheme: str
    source_kind: str
    read: Reader
    summary: str


_REGISTRY: dict[str, Connector] = {}


def register(scheme: str, source_kind: str, summary: str) -> Callable[[Reader], Reader]:
    """Decorator that registers a reader function under its URI scheme."""
    if source_kind not in SOURCE_KINDS:
        raise ValueError(f"unknown source kind {source_kind!r}")

    def wrap(fn: Reader) -> Reader:
        _REGISTRY[scheme] = Connector(scheme, source_kind, fn, summary)
        return fn

    return wrap


def connectors() -> dict[str, Connector]:
    """All registered connectors, importing the built-in ones on first use."""
    import memtape.connectors.sources  # noqa: F401  (registers the built-in schemes)

    return dict(_REGISTRY)


def split_uri(uri: str) -> tuple[str, str]:
    """``slack:PATH`` -> ("slack", "PATH"); ``imap://u@h/f`` -> ("imap", "//u@h/f")."""
    scheme, sep, rest = uri.partition(":")
    if not sep or not scheme or not rest:
        raise SourceError(f"{uri}: not a source URI (expected SCHEME:PATH, e.g. slack:export.zip)")
    return scheme.lower(), rest


def connector_for(uri: str) -> tuple[Connector, str]:
    scheme, path = split_uri(uri)
    table = connectors()
    if scheme not in table:
        raise SourceError(f"{uri}: unknown scheme {scheme!r} (known: {', '.join(sorted(table))})")
    return table[scheme], path


def read_source(uri: str, tenant: str, since: datetime | None = None) -> Iterator[Record]:
    """Stream the records of one source URI, keeping only events at or after ``since`` when given.

    Records at exactly ``since`` are read again on purpose: several records can
    share the cursor's timestamp, and landing one twice is a no-op. Dead letters
    always pass: a bad record is reported whatever its time. An event holding a
    lone surrogate (JSON's ``"\\ud800"``) becomes a dead letter here, for every
    connector, since no UTF-8 column can store it. A second event with an
    earlier event's id but other text becomes a dead letter too, so neither
    copy is lost silently (identical copies are one record, and an edit the
    export marks as one, ``attrs.edited``, replaces the original on purpose).
    """
    connector, path = connector_for(uri)
    texts: dict[str, bytes] = {}  # event id -> digest of the first text landed under it
    for record in connector.read(path, tenant):
        if isinstance(record, RawEvent) and (field := _surrogate_field(record)):
            record = DeadLetter(tenant, record.source, "connector.decode",
                                f"{field} holds a lone surrogate (an invalid \\u escape or undecodable bytes)",
                                position=_storable(record.source_id),
                                raw=(record.payload or record.text or "").encode("utf-8", "surrogatepass"))
        elif isinstance(record, RawEvent) and _repeats_id(record, texts):
            record = DeadLetter(tenant, record.source, "connector.duplicate",
                                f"id {record.source_id!r} repeats an earlier record's id with other text; the earlier one is kept"[:500],
                                position=record.source_id, raw=(record.payload or record.text or "").encode())
        if isinstance(record, RawEvent):
            record.source_uri = record.source_uri or uri
            if since is not None and record.event_time is not None and record.event_time < since:
                continue
        else:
            record.source_uri = record.source_uri or uri
            record.error, record.position = _storable(record.error) or "", _storable(record.position)
        yield record


def _repeats_id(event: RawEvent, texts: dict[str, bytes]) -> bool:
    """True when an earlier event of this read had the same id and other text, and this one is no declared edit."""
    digest = hashlib.blake2b((event.text or "").encode(), digest_size=8).digest()
    if (event.attrs or {}).get("edited"):
        texts[event.event_id] = digest
        return False
    return texts.setdefault(event.event_id, digest) != digest


def _has_surrogate(text: str | None) -> bool:
    return text is not None and not text.isascii() and _SURROGATE.search(text) is not None


def _storable(text: str | None) -> str | None:
    """Text Arrow can store: lone surrogates become ``\\udXXX`` escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if text is not None and _has_surrogate(text) else text


def _surrogate_field(event: RawEvent) -> str | None:
    """The first field holding a lone UTF-16 surrogate, which no UTF-8 column can store, or None."""
    fields = {"source_id": event.source_id, "text": event.text, "sender": event.sender,
              "conversation_id": event.conversation_id, "media_ref": event.media_ref, "payload": event.payload,
              "recipients": "".join(event.recipients),
              "attrs": json.dumps(event.attrs, ensure_ascii=False, default=str) if event.attrs else None}
    return next((name for name, value in fields.items() if _has_surrogate(value)), None)
