"""Arrow schemas of every memtape table, versioned in one place, each with its write disposition.

Every writer validates against these schemas before landing rows, and every
derived table carries provenance columns back to ``raw_events.event_id``.
How a table takes rows whose key is already stored (``disposition``) is
declared here beside its columns, and every writer reads it from here.
This module only describes shapes: it must not read or write data.
"""
from __future__ import annotations

import enum

import pyarrow as pa

SCHEMA_VERSION = "1"
EMBEDDING_DIM = 384
_TS = pa.timestamp("us", tz="UTC")
_IDS = pa.list_(pa.string())


class Disposition(str, enum.Enum):
    """What landing a row does when a row with its key is already stored (every write is keyed on the table's id)."""

    INSERT = "insert"  # the stored row stays: raw data is kept as first read, a replay adds nothing
    MERGE = "merge"  # the two rows are folded into one (``pipelines.merging``): repeated facts gain support
    REPLACE = "replace"  # the new row replaces the stored one: it was recomputed from the same inputs


_DISPOSITIONS: dict[str, Disposition] = {}


def _schema(name: str, key: str, disposition: Disposition, fields: list[pa.Field]) -> pa.Schema:
    """Attach the table name, its merge key and the schema version as metadata, and record its write disposition.

    The disposition stays out of the Arrow metadata: lancedb refuses to open a
    stored table whose schema metadata differs from the one it is given.
    """
    _DISPOSITIONS[name] = disposition
    return pa.schema(
        fields,
        metadata={"memtape.table": name, "memtape.key": key, "memtape.schema_version": SCHEMA_VERSION},
    )


RAW_EVENTS = _schema(
    "raw_events",
    "event_id",
    Disposition.INSERT,
    [
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("source_kind", pa.string(), nullable=False),  # im | email | meeting | health
        pa.field("source", pa.string(), nullable=False),  # connector scheme: slack, mbox, fhir ...
        pa.field("source_uri", pa.string()),
        pa.field("source_id", pa.string(), nullable=False),  # Message-ID, Slack ts, file+offset ...
        pa.field("conversation_id", pa.string()),
        pa.field("sender", pa.string()),
        pa.field("recipients", _IDS),
        pa.field("event_time", _TS),
        pa.field("tz_offset_minutes", pa.int16()),  # the zone the source stated, minutes east of UTC
        pa.field("ingest_time", _TS, nullable=False),
        pa.field("ingest_path", pa.string()),  # backfill | stream: which job derives memories from it
        pa.field("text", pa.string()),
        pa.field("media_ref", pa.string()),
        pa.field("payload", pa.large_string()),  # the original record as read, kept as-is
        pa.field("attrs", pa.string()),  # JSON of structured fields (codes, subject, thread hints)
        pa.field("content_hash", pa.string(), nullable=False),
    ],
)

UTTERANCES = _schema(
    "utterances",
    "utterance_id",
    Disposition.REPLACE,
    [
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("utterance_id", pa.string(), nullable=False),
        pa.field("recording_event_id", pa.string(), nullable=False),
        pa.field("seq", pa.int32(), nullable=False),
        pa.field("start_ms", pa.int64(), nullable=False),
        pa.field("end_ms", pa.int64(), nullable=False),
        pa.field("text", pa.string()),
        pa.field(
            "words",
            pa.list_(
                pa.struct(
                    [
                        ("word", pa.string()),
                        ("start_ms", pa.int64()),
                        ("end_ms", pa.int64()),
                        ("probability", pa.float32()),
                    ]
                )
            ),
        ),
        pa.field("confidence", pa.float32()),
        pa.field("language", pa.string()),
        pa.field("speaker", pa.string()),
        pa.field("event_time", _TS),
    ],
)

EPISODES = _schema(
    "episodes",
    "episode_id",
    Disposition.REPLACE,
    [
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("conversation_id", pa.string()),
        pa.field("source_kind", pa.string()),
        pa.field("start_time", _TS),
        pa.field("end_time", _TS),
        pa.field("member_ids", _IDS, nullable=False),  # raw_events.event_id, in order
        pa.field("surprise", pa.list_(pa.float32())),  # one value per member
        pa.field("boundary_score", pa.float32()),
        pa.field("boundary_signal", pa.string()),  # surprise | time_gap | structure | idle | end
        pa.field("dropped_ids", _IDS),  # members removed by dedupe, still traceable
        pa.field("dropped_summary", pa.string()),  # e.g. "12 short acknowledgements"
    ],
)

TRIPLES = _schema(
    "triples",
    "triple_id",
    Disposition.MERGE,
    [
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("triple_id", pa.string(), nullable=False),
        pa.field("episode_id", pa.string()),
        pa.field("subject", pa.string(), nullable=False),
        pa.field("predicate", pa.string(), nullable=False),
        pa.field("object", pa.string(), nullable=False),
        pa.field("negated", pa.bool_(), nullable=False),
        pa.field("modality", pa.string()),
        pa.field("event_time", _TS),
        pa.field("confidence", pa.float32()),
        pa.field("subject_entity_id", pa.string()),
        pa.field("object_entity_id", pa.string()),
        pa.field("raw_event_id", pa.string(), nullable=False),
        pa.field("char_start", pa.int32()),
        pa.field("char_end", pa.int32()),
        pa.field("flags", _IDS),  # e.g. unresolved_pronoun
        pa.field("supporting_event_ids", _IDS),  # every raw event that stated this fact
        pa.field("support_count", pa.int32()),
        pa.field("last_seen", _TS),
    ],
)

ENTITIES = _schema(
    "entities",
    "entity_id",
    Disposition.MERGE,
    [
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("entity_id", pa.string(), nullable=False),
        pa.field("canonical_name", pa.string(), nullable=False),
        pa.field("entity_type", pa.string()),
        pa.field("aliases", _IDS),
        pa.field("identifiers", _IDS),  # email addresses, LOINC/SNOMED/RxNorm codes
        pa.field("raw_event_ids", _IDS),
    ],
)

MEMORIES = _schema(
    "memories",
    "memory_id",
    Disposition.MERGE,
    [
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("memory_id", pa.string(), nullable=False),
        pa.field("episode_id", pa.string()),
        pa.field("source_kind", pa.string()),
        pa.field("conversation_id", pa.string()),
        pa.field("header", pa.string()),  # who / when / where
        pa.field("text", pa.string(), nullable=False),
        pa.field("token_count", pa.int32(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32(), EMBEDDING_DIM)),
        # one MiniLM vector per piece of text ("who: sentences" between gap marks), in order: recall ranks pieces by them
        pa.field("piece_embeddings", pa.list_(pa.list_(pa.float32(), EMBEDDING_DIM))),
        pa.field("raw_event_ids", _IDS, nullable=False),
        pa.field("triple_ids", _IDS),
        pa.field("participants", _IDS),
        pa.field("subjects", _IDS),  # whom it is about: "Name <id>" (patient, correspondents, participants)
        pa.field("start_time", _TS),
        pa.field("end_time", _TS),
        pa.field("strength", pa.float32()),
        pa.field("last_recalled", _TS),
        pa.field("archived", pa.bool_()),
    ],
)

DEAD_LETTERS = _schema(
    "dead_letters",
    "dead_letter_id",
    Disposition.INSERT,
    [
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("dead_letter_id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("source_uri", pa.string()),
        pa.field("position", pa.string()),  # line, byte offset, zip entry, message key ...
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        pa.field("raw", pa.large_binary()),  # the input as it was, truncated to a limit
        pa.field("created_time", _TS, nullable=False),
    ],
)

CURSORS = _schema(
    "cursors",
    "cursor_id",
    Disposition.REPLACE,
    [
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("cursor_id", pa.string(), nullable=False),  # tenant + source URI
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("last_event_time", _TS),
        pa.field("updated_time", _TS, nullable=False),
    ],
)

PIPELINE_STATE = _schema(
    "pipeline_state",
    "state_id",
    Disposition.REPLACE,
    [
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("state_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # checkpoint | dedupe | segmenter | entities
        pa.field("scope", pa.string(), nullable=False),  # tenant or conversation key; the checkpoint's own name
        pa.field("checkpoint", pa.string(), nullable=False),  # the job whose progress this state belongs to
        pa.field("generation", pa.int64(), nullable=False),  # state is valid once its checkpoint reaches it
        pa.field("payload", pa.large_string(), nullable=False),  # JSON
        pa.field("updated_time", _TS, nullable=False),
    ],
)

TOMBSTONES = _schema(
    "tombstones",
    "tombstone_id",
    Disposition.REPLACE,
    [
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("tombstone_id", pa.string(), nullable=False),  # tenant + source URI ("" for the whole tenant)
        pa.field("source_uri", pa.string()),  # null: every source of the tenant
        pa.field("deleted_time", _TS, nullable=False),  # records read from their source before this stay deleted
    ],
)

TABLES: dict[str, pa.Schema] = {
    s.metadata[b"memtape.table"].decode(): s
    for s in (RAW_EVENTS, UTTERANCES, EPISODES, TRIPLES, ENTITIES, MEMORIES, DEAD_LETTERS, CURSORS, PIPELINE_STATE,
              TOMBSTONES)
}


def key_of(table: str) -> str:
    """The stable id column that ``merge_insert`` matches on for ``table``."""
    return TABLES[table].metadata[b"memtape.key"].decode()


def disposition(table: str) -> Disposition:
    """How ``table`` takes a row whose key is already stored: kept, folded or replaced."""
    return _DISPOSITIONS[table]


def conform(table: str, rows: list[dict]) -> pa.Table:
    """Build an Arrow table for ``table`` from row dicts, failing on any column the schema lacks."""
    schema = TABLES[table]
    extra = {k for row in rows for k in row} - set(schema.names)
    if extra:
        raise ValueError(f"{table}: columns not in schema: {sorted(extra)}")
    return pa.Table.from_pylist(rows, schema=schema)
