"""Kafka message encoding of ``raw_events`` records and dead letters, versioned by headers.

Each message value is one ``raw_events`` row as UTF-8 JSON. JSON rather than
Arrow IPC because a Kafka message here carries one small record (an IM line,
one email): an Arrow IPC stream repeats its schema in every message, which is
larger than a typical chat line, while JSON costs nothing per message, reads
in any consumer and any console tool, and needs no schema registry. Arrow
stays the format at rest (Lance); the consumer turns JSON back into
``RawEvent`` and the sink batches those into Arrow. The header
``memtape-codec`` names the encoding and the ``raw_events`` schema, each with
its version (``json/1;raw_events/1``), so a reader refuses what it does not
understand instead of guessing. Large media never travels inline:
``media_ref`` must be a short file or object URI, and a payload that would
push a message past the size limit is left out (the source still holds it).
This module only converts values; it never talks to a broker.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

import orjson

from memtape.schemas import SCHEMA_VERSION
from memtape.schemas.records import KEY_SEPARATOR, MAX_DEAD_LETTER_RAW_BYTES, DeadLetter, RawEvent

CODEC_HEADER = "memtape-codec"
CODEC = f"json/1;raw_events/{SCHEMA_VERSION}".encode()  # encoding/version;table/schema version, one header per message
PAYLOAD_HEADER = "memtape-payload"
PAYLOAD_OMITTED = b"omitted"
DEAD_LETTER_PREFIX = "memtape-dlq-"
DEAD_LETTER_REASON = DEAD_LETTER_PREFIX + "reason"
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
MAX_MEDIA_REF_CHARS = 2048

Headers = list[tuple[str, bytes]]
_EVENT_HEADERS: Headers = [(CODEC_HEADER, CODEC)]
# orjson writes a row (datetimes included, as RFC 3339) in about a tenth of the stdlib's time, which is
# most of what memtape adds per message over a bare producer. It refuses lone surrogates (bytes a
# connector could not decode and kept escaped); those rows take the stdlib path, which keeps them.
_FALLBACK_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=lambda o: o.isoformat())
_EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(RawEvent))  # row columns that rebuild the event
_REQUIRED = ("tenant", "event_id", "source_kind", "source", "source_id", "ingest_time")
_DEAD_LETTER_FIELDS = ("tenant", "source", "stage", "error", "position", "source_uri", "created_time")


class CodecError(ValueError):
    """A value that is not a ``raw_events`` record this codec can read or write."""


def event_key(event: RawEvent) -> bytes:
    """Tenant + conversation (the source id when there is none): one conversation, one partition, in order."""
    return f"{event.tenant}{KEY_SEPARATOR}{event.conversation_id or event.source_id}".encode()


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def _dumps(row: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(row)
    except orjson.JSONEncodeError:
        return _FALLBACK_JSON.encode(row).encode("utf-8", "surrogatepass")


def _loads(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return json.loads(value.decode("utf-8", "surrogatepass"))


def _check_media_ref(ref: str | None) -> None:
    if ref is not None and (len(ref) > MAX_MEDIA_REF_CHARS or ref.startswith("data:")):
        raise CodecError(f"media_ref must be a reference (a file or object URI), not inline data ({len(ref)} chars)")


def encode_event(event: RawEvent, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> tuple[bytes, Headers]:
    """Value and headers of one event; drops the payload rather than exceed ``max_bytes``."""
    _check_media_ref(event.media_ref)
    row = event.to_row()
    value = _dumps(row)
    if len(value) <= max_bytes:
        return value, _EVENT_HEADERS
    if row["payload"] is not None:
        row["payload"] = None
        value = _dumps(row)
        if len(value) <= max_bytes:
            return value, [*_EVENT_HEADERS, (PAYLOAD_HEADER, PAYLOAD_OMITTED)]
    raise CodecError(f"record of {len(value)} bytes exceeds the {max_bytes}-byte message limit even without its payload")


def _header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> bytes | None:
    for key, value in headers or ():
        if key == name:
            return value
    return None


@functools.lru_cache(maxsize=None)
def _zone(minutes: int) -> timezone:
    """The fixed zone ``minutes`` east of UTC, made once per offset rather than once per message."""
    return timezone(timedelta(minutes=minutes))


def _time(value: Any, tz_minutes: Any) -> datetime | None:
    if value is None:
        return None
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise CodecError(f"naive timestamp {value!r}")
    return dt.astimezone(_zone(tz_minutes)) if isinstance(tz_minutes, int) else dt


def decode_event(value: bytes | None, headers: Sequence[tuple[str, bytes]] | None) -> RawEvent:
    """The ``RawEvent`` a message carries; ``CodecError`` for anything else (a poison message)."""
    codec = _header(headers, CODEC_HEADER)
    if codec != CODEC:
        raise CodecError(f"unsupported {CODEC_HEADER} header {codec!r} (this reader speaks {CODEC.decode()})")
    try:
        row = _loads(value or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CodecError(f"value is not JSON: {exc}") from exc
    if not isinstance(row, dict):
        raise CodecError("value is not a JSON object")
    missing = [k for k in _REQUIRED if not isinstance(row.get(k), str)]
    if missing:
        raise CodecError(f"missing string fields {missing}")
    try:
        fields = {name: row[name] for name in _EVENT_FIELDS if name in row}
        fields["event_time"] = _time(row.get("event_time"), row.get("tz_offset_minutes"))
        fields["ingest_time"] = _time(row["ingest_time"], None)
        fields["attrs"] = json.loads(row["attrs"]) if row.get("attrs") else {}
        fields["recipients"] = list(row.get("recipients") or [])
        event = RawEvent(**fields)
    except (ValueError, TypeError) as exc:
        raise CodecError(f"malformed field: {exc}") from exc
    if event.event_id != row["event_id"]:
        raise CodecError("event_id does not match tenant/source/source_id: the record was altered")
    return event


def dead_letter_headers(reason: str, stage: str, **where: object) -> Headers:
    """Headers that say why and where a message was dead-lettered (values as UTF-8 text)."""
    fields = {"reason": reason, "stage": stage, **where}
    return [(DEAD_LETTER_PREFIX + k.replace("_", "-"), str(v).encode()) for k, v in fields.items() if v is not None]


def encode_dead_letter(letter: DeadLetter) -> tuple[bytes, bytes, Headers]:
    """Key, value (the raw input, truncated) and headers of a connector's dead letter."""
    key = f"{letter.tenant}{KEY_SEPARATOR}{letter.source_uri or letter.source}".encode()
    fields = {k: getattr(letter, k) for k in _DEAD_LETTER_FIELDS if k not in ("error", "stage")}
    fields["created_time"] = _iso(letter.created_time)
    return key, (letter.raw or b"")[:MAX_DEAD_LETTER_RAW_BYTES], dead_letter_headers(letter.error, letter.stage, **fields)


def decode_dead_letter(value: bytes | None, headers: Sequence[tuple[str, bytes]] | None, tenant: str = "default") -> DeadLetter:
    """A dead-letter topic message back as a ``DeadLetter`` row source for the ``dead_letters`` table."""
    got = {k[len(DEAD_LETTER_PREFIX):].replace("-", "_"): v.decode("utf-8", "replace")
           for k, v in headers or () if k.startswith(DEAD_LETTER_PREFIX)}
    position = got.get("position") or (f"{got['topic']}:{got['partition']}:{got['offset']}" if "offset" in got else None)
    created = got.get("created_time")
    letter = DeadLetter(tenant=got.get("tenant", tenant), source=got.get("source", "kafka"), stage=got.get("stage", "unknown"),
                        error=got.get("reason", "unknown"), position=position, source_uri=got.get("source_uri"), raw=value)
    if created:
        letter.created_time = datetime.fromisoformat(created)
    return letter

