"""Split recalled memories into verbatim pieces, each traced to the one raw event it came from.

A memory keeps, per message, the sentences compression selected, under the
sender's label, with ``MEMORY_GAP`` between sentences that were apart or
parted by a line break. Packing whole episodes spends the budget on their
weakest lines and cites events the reader never sees, so recall converges on
pieces instead: each line is aligned, in order, to the raw event whose sender
has that label and whose words contain it, and cut into the longest runs of
sentences that stand in that event's text as written (whitespace and case
aside). What recall returns is therefore text a person wrote, or a connector
rendered, never a rewrite. A meeting memory's lines align the same way with
the transcribed utterances it names, since its recording's raw event holds
audio, not text. Pieces are scored within the query's best memories by the
memory's score, the piece's query terms (IDF over the pool) and its
static-embedding similarity. A line that aligns with no event is left out; a
memory none of whose lines align (an abstractive summary) stays one whole
unit with all its raw events. Alignments and vectors are cached per memory id
and text. This module reads ``raw_events`` and ``utterances`` of one tenant only.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import threading
from collections import Counter, OrderedDict
from datetime import datetime
from typing import Any, Sequence

import numpy as np

from memtape.connectors.lance_store import Store, any_of
from memtape.schemas.records import MEMORY_GAP, memory_pieces, speaker_label
from memtape.transforms.tokens import match_terms, sentence_spans, words

ALIGN_MIN_SHARE = 0.8  # share of a line's words its raw event must contain
LINE_BASE = 0.2  # a line of a strong memory keeps some score even when it shares no word with the query
STATIC_WEIGHT = 0.5  # weights, floor and centring chosen together on LoCoMo dev and the shared FHIR patients (BENCHMARKS.md)
DENSE_WEIGHT = 4.0  # MiniLM similarity of a piece to the query, where the memory stored the piece's vector
DENSE_CENTER = 1.0  # share of the pool's median similarity taken off each piece's
NEIGHBOUR_SHARE = 0.3  # a line next to a relevant line of the same memory gets this share of its score
PRIOR_EXPONENT = 1.0  # how much a line's score follows its memory's: 0 ignores the memory, 1 scales by it
CACHE_MEMORIES = 50_000
_LABEL_SEP = ": "


@dataclasses.dataclass
class Line:
    """One line of a memory (or a whole memory that could not be split) with its provenance."""

    memory_id: str
    who: str | None
    text: str
    raw_event_ids: list[str]
    when: datetime | None
    sources: list[str] = dataclasses.field(default_factory=list)  # connector schemes of the raw events
    source_ids: list[str] = dataclasses.field(default_factory=list)  # ids in the source (Message-ID, dia_id ...)
    vector: Any = None  # static embedding, unit length
    dense: Any = None  # its MiniLM vector as the memory stored it (``piece_embeddings``), when it is one of its pieces
    piece: int = 0  # which verbatim piece of its raw event's line
    source_kind: str | None = None  # these three for working-memory lines only: a memory line has its memory row
    conversation_id: str | None = None
    subjects: list[str] = dataclasses.field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.memory_id}#{self.raw_event_ids[0] if len(self.raw_event_ids) == 1 else 'all'}#{self.piece}"


def align(text: str, events: Sequence[dict]) -> list[tuple[str, str, dict]] | None:
    """(who, body, raw event) per line of ``text`` that finds its event, in order; None when no line does.

    A line finds the next event whose sender has its label (a sender-less
    event's label is "unknown") and whose words contain it. A line that finds
    none (a rewritten one) is left out rather than cited wrongly.
    """
    out = []
    start = 0
    for line in text.split("\n"):
        who, sep, body = line.partition(_LABEL_SEP)
        mine = set(words(body))
        if not sep or not mine:
            continue
        for j in range(start, len(events)):
            event = events[j]
            if (who in (event["sender"], speaker_label(event["sender"]))
                    and len(mine & set(words(event["text"] or ""))) >= ALIGN_MIN_SHARE * len(mine)):
                out.append((who, body, event))
                start = j + 1
                break
    return out or None


def _plain(text: str) -> str:
    return " ".join(text.split()).casefold()


def verbatim_pieces(body: str, raw: str) -> list[str]:
    """The longest runs of ``body``'s sentences that stand in ``raw`` as written, whitespace and case aside.

    A line none of whose sentences stands in ``raw`` (a rewritten memory) gives
    the raw text itself: what its sender wrote, never the rewrite.
    """
    haystack = _plain(raw)
    out: list[str] = []
    for part in body.split(MEMORY_GAP):
        part = part.strip()
        if not part:
            continue
        if _plain(part) in haystack:
            out.append(part)
            continue
        run = ""
        for a, b in sentence_spans(part):
            sentence = part[a:b]
            joined = f"{run} {sentence}" if run else sentence
            if _plain(joined) in haystack:
                run = joined
                continue
            if run:
                out.append(run)
            run = sentence if _plain(sentence) in haystack else ""
        if run:
            out.append(run)
    return out or ([raw.strip()] if raw.strip() else [])


class LineCache:
    """Lines and their vectors per (tenant, memory id, text), least recently used dropped first."""

    def __init__(self, size: int = CACHE_MEMORIES) -> None:
        self._items: OrderedDict[tuple[str, str, str, str], list[Line]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def lines(self, store: Store, tenant: str, rows: Sequence[dict]) -> list[Line]:
        """The lines of ``rows`` (memory rows of ``tenant``), in the rows' order."""
        keys = [(store.home, tenant, r["memory_id"], hashlib.blake2b(r["text"].encode(), digest_size=8).hexdigest()) for r in rows]
        with self._lock:
            found = {k: self._items[k] for k in keys if k in self._items}
            for k in found:
                self._items.move_to_end(k)
        missing = [(k, r) for k, r in zip(keys, rows) if k not in found]
        if missing:
            built = _split(store, tenant, [r for _, r in missing])
            with self._lock:
                for (k, _), lines in zip(missing, built):
                    self._items[k] = found[k] = lines
                while len(self._items) > self._size:
                    self._items.popitem(last=False)
        return [line for k in keys for line in found[k]]


LINES = LineCache()


def _split(store: Store, tenant: str, rows: Sequence[dict]) -> list[list[Line]]:
    from memtape.recall.candidates import lookup

    ids = sorted({e for r in rows for e in r["raw_event_ids"] or ()})
    listed = any_of("memory_id", [r["memory_id"] for r in rows])
    dense = {d["memory_id"]: d["piece_embeddings"] or [] for d in lookup(store, "memories", listed, ["memory_id", "piece_embeddings"], len(rows))}
    events: dict[str, dict] = {}
    if ids:
        # The tenant is checked on the rows read, not in the filter: its index matches most of a large
        # tenant's table and costs more than the id lookup itself.
        columns = ["tenant", "event_id", "sender", "text", "event_time", "source", "source_id"]
        events = {e["event_id"]: e for e in lookup(store, "raw_events", any_of("event_id", ids), columns, len(ids)) if e["tenant"] == tenant}
    events.update(_utterances(store, tenant, ids, events))
    out: list[list[Line]] = []
    for row in rows:
        members = sorted((events[e] for e in row["raw_event_ids"] or () if e in events),
                         key=lambda e: (e["event_time"] is None, e["event_time"] or datetime.min))
        aligned = align(row["text"], members) if members else None
        if aligned:
            out.append([Line(row["memory_id"], who, piece, [ev["event_id"]], ev["event_time"] or row["start_time"],
                             [ev["source"]], [ev["source_id"]], piece=k)
                        for who, body, ev in aligned for k, piece in enumerate(verbatim_pieces(body, ev["text"] or ""))])
        else:
            who = ", ".join(p for p in row.get("participants") or [] if p) or None
            out.append([Line(row["memory_id"], who, row["text"], list(row["raw_event_ids"] or []), row["start_time"],
                             sorted({e["source"] for e in members}), [e["source_id"] for e in members])])
    for row, lines in zip(rows, out):
        vectors = dict(zip(memory_pieces(row["text"]), dense.get(row["memory_id"]) or []))
        for line in lines:
            found = vectors.get(f"{line.who}: {line.text}" if line.who else line.text)
            line.dense = np.asarray(found, dtype=np.float32) if found is not None else None
    flat = [line for lines in out for line in lines]
    if flat:
        static = static_embeddings_cached()
        for line, ids_ in zip(flat, static.token_ids([f"{ln.who}: {ln.text}" if ln.who else ln.text for ln in flat])):
            line.vector = static.vector(ids_, np.ones(len(ids_), dtype=np.float32))
    return out


def _utterances(store: Store, tenant: str, ids: list[str], events: dict[str, dict]) -> dict[str, dict]:
    """Transcribed utterances among ``ids`` (a meeting memory names them), shaped as raw events of their speakers.

    The recording's raw event holds the audio as it came, not text, so a meeting
    memory's lines align with what was said as transcribed; each cites its
    recording's source with a media-fragment time (``#t=`` seconds into it).
    """
    from memtape.recall.candidates import lookup

    missing = [e for e in ids if e not in events]
    if not missing or "utterances" not in store.stored_tables():
        return {}
    columns = ["tenant", "utterance_id", "recording_event_id", "start_ms", "speaker", "text", "event_time"]
    spoken = [u for u in lookup(store, "utterances", any_of("utterance_id", missing), columns, len(missing)) if u["tenant"] == tenant]
    recording_ids = sorted({u["recording_event_id"] for u in spoken})
    recordings = {e["event_id"]: e for e in lookup(store, "raw_events", any_of("event_id", recording_ids),
                                                   ["tenant", "event_id", "source", "source_id"], len(recording_ids))
                  if e["tenant"] == tenant}
    out = {}
    for u in spoken:
        recording = recordings.get(u["recording_event_id"], {})
        out[u["utterance_id"]] = {"event_id": u["utterance_id"], "sender": u["speaker"], "text": u["text"],
                                  "event_time": u["event_time"], "source": recording.get("source", "audio"),
                                  "source_id": f"{recording.get('source_id') or u['recording_event_id']}#t={u['start_ms'] / 1000:g}"}
    return out


@functools.lru_cache(maxsize=1)
def static_embeddings_cached() -> Any:
    """The distilled static MiniLM vectors, loaded once per process."""
    from memtape.transforms.static_embed import static_embeddings

    return static_embeddings()


def score_lines(lines: Sequence[Line], memory_score: dict[str, float], query: str,
                ignored: frozenset[str] = frozenset(), query_vector: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(score, lexical match) of each line.

    The score is its memory's share of the best score x (base + query-term
    IDF + static similarity + MiniLM similarity to ``query_vector`` where the
    line has a stored vector); the lexical match is the query-term IDF alone,
    as a share of the best line's. ``ignored`` query words (the name of the
    person asked about, which every line of theirs may hold) score nothing.
    """
    if not lines:
        return np.zeros(0), np.zeros(0)
    top = max(memory_score.values()) or 1.0
    prior = np.array([memory_score[line.memory_id] / top for line in lines], dtype=np.float32) ** PRIOR_EXPONENT
    terms = match_terms(query) - ignored
    line_words = [match_terms(f"{line.who or ''} {line.text}") for line in lines]
    df = Counter(w for ws in line_words for w in ws & terms)
    n = len(lines)
    lexical = np.array([sum(math.log(1 + n / df[w]) for w in ws & terms) for ws in line_words], dtype=np.float32)
    if lexical.max() > 0:
        lexical /= lexical.max()
    static = static_embeddings_cached()
    ids = static.token_ids([" ".join(w for w in query.split() if not (match_terms(w) and match_terms(w) <= ignored)) or query])[0]
    static_query = static.vector(ids, np.ones(len(ids), dtype=np.float32))
    similarity = np.clip(np.stack([line.vector for line in lines]) @ static_query, 0.0, None)
    dense = np.zeros(len(lines), dtype=np.float32)
    if query_vector is not None:
        held = [i for i, line in enumerate(lines) if line.dense is not None]
        if held:
            sims = np.stack([lines[i].dense for i in held]) @ query_vector
            # Above the pool's median: lines that all look alike to MiniLM (one patient's readings) gain nothing.
            dense[held] = np.clip(sims - DENSE_CENTER * np.median(sims), 0.0, None)
    score = prior * (LINE_BASE + lexical + STATIC_WEIGHT * similarity + DENSE_WEIGHT * dense)
    smoothed = score.copy()
    same_next = np.array([a.memory_id == b.memory_id for a, b in zip(lines, lines[1:])], dtype=bool)
    smoothed[:-1] += NEIGHBOUR_SHARE * score[1:] * same_next
    smoothed[1:] += NEIGHBOUR_SHARE * score[:-1] * same_next
    return smoothed, lexical
