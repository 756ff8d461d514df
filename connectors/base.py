"""The contract every source connector follows, and the registry of URI schemes.

A connector reads one source (a file, a folder, an archive or a mailbox) and
yields ``RawEvent`` records one at a time, or ``DeadLetter`` records for input
it cannot parse, so a bad record never stops the good ones around it. A
connector must not write anywhere: landing is the sink's job.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Callable, Iterator, Protocol

from memtape.errors import UserError
from memtape.schemas.records import DeadLetter, RawEvent

Record = RawEvent | DeadLetter
SOURCE_KINDS = ("im", "email", "meeting", "health")


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
    always pass: a bad record is reported whatever its time.
    """
    connector, path = connector_for(uri)
    for record in connector.read(path, tenant):
        if isinstance(record, RawEvent):
            record.source_uri = record.source_uri or uri
            if since is not None and record.event_time is not None and record.event_time < since:
                continue
        elif record.source_uri is None:
            record.source_uri = uri
        yield record
