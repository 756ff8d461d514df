"""Typed records that flow between stages, and the stable ids that key them.

Connectors yield ``RawEvent`` and ``DeadLetter`` values; ``to_row`` turns each
into a dict that matches its Arrow schema in ``memtape.schemas``. Ids are
content-derived so re-reading a source yields the same keys. The shapes that
cross stages inside the pipeline (``Unit``, ``DroppedUnit``, ``EpisodeBundle``,
``ExtractedEpisode``, ``StateRow``) are ``TypedDict``s: dicts at run time, so Beam's coders, Arrow's
``from_pylist`` and every ``row["field"]`` read keep working, while mypy checks
the keys at the stage boundaries. ``ConversationKey`` is a small frozen value
with one encoding, because it has behaviour (encode, decode) and travels as a
Beam key, which must be a deterministically encoded string.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import unicodedata
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, NotRequired, TypedDict

from memtape import _textcore

MAX_DEAD_LETTER_RAW_BYTES = 64 * 1024


def stable_id(*parts: object) -> str:
    """A 128-bit hex id from the parts, stable across runs and machines."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(str(part).encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()


def normalized(text: str) -> str:
    """``text`` in NFKC, case-folded, its whitespace runs made single spaces and its ends trimmed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def content_hash(text: str | None, digest_size: int = 16) -> str:
    """Hash of whitespace- and case-normalised text: equal hashes mean the same content."""
    text = text or ""
    return _digest(_normal_bytes(text, 0, len(text)), digest_size)


def content_hashes(text: str, spans: Iterable[tuple[int, int]], digest_size: int = 16) -> list[str]:
    """``content_hash`` of each ``text[a:b]``."""
    return [_digest(_normal_bytes(text, a, b), digest_size) for a, b in spans]


def _normal_bytes(text: str, a: int, b: int) -> bytes:
    """The UTF-8 of ``normalized(text[a:b])``; for ASCII text (NFKC leaves it as it is, case folding lower-cases it)
    the text core makes it without slicing."""
    if text.isascii():
        return _textcore.spaced_lower(text, a, b)
    return normalized(text[a:b]).encode("utf-8", "surrogatepass")


def _digest(normal: bytes, digest_size: int) -> str:
    return hashlib.blake2b(normal, digest_size=digest_size).hexdigest()


# Sources whose events are records a connector rendered (one fact each, at its own time): the same words at
# another time or for another person are a new fact, and a record has no filler to leave out.
STRUCTURED_KINDS = frozenset({"health"})

# A memory's text is one "label: sentences" line per message; kept sentences that were apart in the message, or
# parted by a line break rather than a full stop, are joined by this mark, so each piece between marks stands verbatim
# in the message and splits back into the sentences that were kept.
MEMORY_GAP = " \u2026 "


def memory_pieces(text: str) -> list[str]:
    """The pieces of a memory's text, in order: ``who: sentences`` for each run of a line between gap marks.

    Recall hands pieces to the reader one by one, so each is embedded alone
    (the memory's own vector sees only its first 256 word pieces).
    """
    out = []
    for line in text.split("\n"):
        who, sep, body = line.partition(": ")
        for piece in body.split(MEMORY_GAP) if sep else [line]:
            if piece.strip():
                out.append(f"{who}: {piece.strip()}" if sep else piece.strip())
    return out


def speaker_label(sender: str | None) -> str:
    """A short name for a sender in memory text: the name of ``Name <address>``, the local part of a bare address."""
    if not sender:
        return "unknown"
    name = sender.split("<")[0].strip().strip('"') or sender
    return name.split("@")[0] if "@" in name else name


def record_attrs(unit: dict) -> dict:
    """A row's ``attrs`` as a dict, whether it holds JSON text (raw_events) or a dict already (units)."""
    attrs = unit.get("attrs")
    if isinstance(attrs, str):
        try:
            attrs = json.loads(attrs)
        except ValueError:
            return {}
    return attrs if isinstance(attrs, dict) else {}


def subjects_of(units: list[dict]) -> list[str]:
    """Whom an episode is about, in first-seen order: a health record's patient, else the people who wrote or received it.

    A person is written as the source names them (``Name <id>`` where both are
    known), so recall can match a query on the name, the address or the id.
    """
    out: list[str] = []
    for unit in units:
        attrs = record_attrs(unit)
        if attrs.get("patient_id"):
            patient = f"Patient/{attrs['patient_id']}"
            out.append(f"{attrs['patient_name']} <{patient}>" if attrs.get("patient_name") else patient)
            continue
        out.extend(p for p in [unit.get("sender"), *(unit.get("recipients") or [])] if p)
    return list(dict.fromkeys(out))


KEY_SEPARATOR = "\x1f"  # ASCII unit separator: cannot occur in a tenant name or conversation id by accident
UNIT_FIELDS = ("tenant", "event_id", "source_kind", "conversation_id", "sender", "recipients", "event_time", "text", "attrs")


class Unit(TypedDict):
    """One message, utterance or record as the stages after dedupe see it (``UNIT_FIELDS``, then what dedupe adds)."""

    tenant: str
    event_id: str
    source_kind: str | None
    conversation_id: str | None
    sender: str | None
    recipients: list[str] | None
    event_time: datetime | None
    text: str | None
    attrs: str | dict[str, Any] | None  # JSON text as in raw_events, or parsed
    stripped: NotRequired[dict[str, int]]  # characters dedupe cut, by reason
    duplicate_of: NotRequired[str | None]


class DroppedUnit(TypedDict):
    """A raw event dedupe left out, with the reason; it still belongs to an episode."""

    tenant: str
    event_id: str
    conversation_id: str | None
    event_time: datetime | None
    reason: str
    duplicate_of: str | None


class EpisodeBundle(TypedDict):
    """A closed episode with its kept units in order and the dropped units inside it; what extraction and
    compression consume (compression also gets the episode's ``triples``)."""

    episode: dict[str, Any]  # an ``episodes`` row
    units: list[Unit]
    dropped: list[DroppedUnit]
    triples: NotRequired[list[dict[str, Any]]]


class StateRow(TypedDict):
    """A ``pipeline_state`` row: one kind of carried state for one scope, valid once its checkpoint reaches ``generation``."""

    tenant: str
    state_id: str
    kind: str
    scope: str
    checkpoint: str
    generation: int
    payload: str
    updated_time: datetime


@dataclasses.dataclass(frozen=True)
class Mention:
    """One entity resolver call an extractor made, with the event order of the unit it came from."""

    order: tuple[Any, ...]  # ``event_order`` of its unit, then its place among the episode's mentions
    method: str  # an EntityResolver method (transforms.entities.RECORDED_CALLS)
    args: tuple[Any, ...]  # in the resolver method's order


class ExtractedEpisode(TypedDict):
    """What extraction hands to resolution for one episode: its triples, whose entity id fields hold indices
    into ``mentions`` (or None), and the mentions themselves."""

    tenant: str
    conversation_id: str | None
    episode_id: str
    mentions: list[Mention]
    triples: list[dict[str, Any]]


def unit_of(row: Mapping[str, Any]) -> Unit:
    """The unit fields of a ``raw_events`` row (or of a unit), missing ones None."""
    return Unit(tenant=row["tenant"], event_id=row["event_id"], source_kind=row.get("source_kind"),
                conversation_id=row.get("conversation_id"), sender=row.get("sender"), recipients=row.get("recipients"),
                event_time=row.get("event_time"), text=row.get("text"), attrs=row.get("attrs"))


@dataclasses.dataclass(frozen=True)
class ConversationKey:
    """Tenant and conversation: the key that groups a conversation's units, encoded as one string for Beam and state scopes."""

    tenant: str
    conversation_id: str = ""

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> ConversationKey:
        return cls(row["tenant"], row.get("conversation_id") or "")

    def encode(self) -> str:
        return f"{self.tenant}{KEY_SEPARATOR}{self.conversation_id}"

    @classmethod
    def decode(cls, key: str) -> ConversationKey:
        """The key ``encode`` wrote; a key with no separator is a bare tenant."""
        tenant, _, conversation = key.partition(KEY_SEPARATOR)
        return cls(tenant, conversation)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def tz_offset_minutes(dt: datetime | None) -> int | None:
    """Minutes east of UTC that an aware datetime states, None for naive or missing."""
    offset = dt.utcoffset() if dt is not None else None
    if offset is None:
        return None
    return offset.days * 1440 + offset.seconds // 60  # floor of the signed minutes, as total_seconds() // 60


@dataclasses.dataclass
class RawEvent:
    """One record read from a source, before any transform; the payload stays as read."""

    tenant: str
    source_kind: str
    source: str
    source_id: str
    text: str | None
    event_time: datetime | None
    conversation_id: str | None = None
    sender: str | None = None
    recipients: list[str] = dataclasses.field(default_factory=list)
    source_uri: str | None = None
    media_ref: str | None = None
    payload: str | None = None
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    ingest_time: datetime = dataclasses.field(default_factory=utcnow)
    ingest_path: str = "backfill"

    @property
    def event_id(self) -> str:
        return stable_id(self.tenant, self.source, self.source_id)

    def to_row(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "event_id": self.event_id,
            "source_kind": self.source_kind,
            "source": self.source,
            "source_uri": self.source_uri,
            "source_id": self.source_id,
            "conversation_id": self.conversation_id,
            "sender": self.sender,
            "recipients": list(self.recipients),
            "event_time": _utc(self.event_time),
            "tz_offset_minutes": tz_offset_minutes(self.event_time),
            "ingest_time": _utc(self.ingest_time),
            "ingest_path": self.ingest_path,
            "text": self.text,
            "media_ref": self.media_ref,
            "payload": self.payload,
            "attrs": json.dumps(self.attrs, ensure_ascii=False, sort_keys=True, default=str) if self.attrs else None,
            "content_hash": content_hash(self.text),
        }


@dataclasses.dataclass
class DeadLetter:
    """Input a stage could not handle, with where it came from and why."""

    tenant: str
    source: str
    stage: str
    error: str
    position: str | None = None
    source_uri: str | None = None
    raw: bytes | None = None
    created_time: datetime = dataclasses.field(default_factory=utcnow)

    @property
    def dead_letter_id(self) -> str:
        return stable_id(self.tenant, self.source_uri, self.position, self.stage, self.error)

    def to_row(self) -> dict[str, Any]:
        raw = self.raw[:MAX_DEAD_LETTER_RAW_BYTES] if self.raw is not None else None
        return {
            "tenant": self.tenant,
            "dead_letter_id": self.dead_letter_id,
            "source": self.source,
            "source_uri": self.source_uri,
            "position": self.position,
            "stage": self.stage,
            "error": self.error,
            "raw": raw,
            "created_time": _utc(self.created_time),
        }
