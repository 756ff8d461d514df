"""The dedupe decision for one row: keep it (cleaned) or drop it with a reason, updating the scope's state.

``Deduper`` applies the rules (``rules``) and the near-duplicate sketches
(``sketch``) against the carried state (``state``) in event order, so a replay
decides alike. It knows nothing of Beam (``stage`` wires it into a pipeline).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Callable, Iterable, Iterator, Mapping

from memtape.schemas.records import STRUCTURED_KINDS, Unit, content_hash, unit_of
from memtape.transforms.dedupe.rules import (
    is_auto_reply, low_entropy_reason, sender_names, short_hash, short_hashes, split_quoted, strip_signature, tail_lines,
    unseen_sentences,
)
from memtape.transforms.dedupe.sketch import band_keys, minhash
from memtape.transforms.dedupe.state import DedupeState, TenantState
from memtape.transforms.tokens import content_words, count_tokens, sentence_spans, unwrap

DELTA_MIN_CONTENT_WORDS = 3  # a near-duplicate that adds this much new content keeps its new sentences
# Chat events no person wrote (IRC joins, quits and nick changes, WhatsApp's and Telegram's group notices, Slack's
# joins and leaves of public and private channels and its integration notices): raw_events keeps them for SQL, but a
# memory of what people said leaves them out.
SYSTEM_SUBTYPES = frozenset({"system", "service", "channel_join", "channel_leave", "group_join", "group_leave",
                             "bot_add", "bot_remove"})

REASON_PHRASES = {
    "exact_duplicate": ("exact duplicate", "exact duplicates"),
    "near_duplicate": ("near-duplicate", "near-duplicates"),
    "short_ack": ("short acknowledgement", "short acknowledgements"),
    "emoji_only": ("emoji-only message", "emoji-only messages"),
    "repetitive": ("repetitive message", "repetitive messages"),
    "auto_reply": ("auto-reply", "auto-replies"),
    "empty": ("empty message", "empty messages"),
    "system_event": ("system notice", "system notices"),
}


def attrs_of(row: dict) -> dict[str, Any]:
    attrs = row.get("attrs")
    if isinstance(attrs, dict):
        return attrs
    try:
        parsed = json.loads(attrs) if attrs else {}
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


class Deduper:
    """Applies the dedupe rules to rows of one or many tenants, in the order given, updating the state."""

    def __init__(self, state: DedupeState | None = None, scope_of: Callable[[dict], str] | None = None) -> None:
        self.state = state or DedupeState()
        self._scope_of = scope_of or tenant_of

    def process(self, row: dict) -> tuple[Unit | None, dict | None]:
        """(kept unit, None) or (None, dropped unit) for one raw_events row."""
        text = (row.get("text") or "").replace("\r\n", "\n")
        if row.get("source_kind") in STRUCTURED_KINDS:  # a reading equal to another one is still a new fact
            return self._kept(row, text.strip(), {}, None), None
        ts = self.state.tenant(self._scope_of(row))
        attrs = attrs_of(row)
        if attrs.get("subtype") in SYSTEM_SUBTYPES:
            return None, self._dropped(row, "system_event")
        subject = str(attrs.get("subject") or "")
        raw_hash = content_hash(text)
        first = ts.first_with(raw_hash, row["event_id"])
        if first is not None:
            return None, self._dropped(row, "exact_duplicate", first)
        if row.get("source_kind") == "email" and is_auto_reply(text, subject):
            return None, self._dropped(row, "auto_reply")
        cleaned, stripped = self._clean(row, text, attrs, ts)
        reason = low_entropy_reason(cleaned)
        if reason:
            return None, self._dropped(row, reason)
        # Outer whitespace never reaches a content hash: text that cleaning only stripped keeps the raw one.
        clean_hash = raw_hash if cleaned == text.strip() else content_hash(cleaned)
        first = ts.first_with(clean_hash, row["event_id"]) if clean_hash != raw_hash else None
        if first is not None:
            return None, self._dropped(row, "exact_duplicate", first)
        duplicate_of = None
        sig = minhash(cleaned)
        if sig is not None:
            keys = band_keys(sig).tolist()
            duplicate_of = ts.near_duplicate_of(sig, keys)
            if duplicate_of is None:
                ts.add_sketch(row["event_id"], sig, keys)
            else:
                delta = unseen_sentences(cleaned, ts.sentences)
                if len(content_words(delta)) < DELTA_MIN_CONTENT_WORDS:
                    return None, self._dropped(row, "near_duplicate", duplicate_of)
                stripped["near_duplicate"] = count_tokens(cleaned) - count_tokens(delta)
                cleaned = delta
        unwrapped = unwrap(cleaned)
        ts.remember_sentences(short_hashes(unwrapped, sentence_spans(unwrapped)))
        return self._kept(row, cleaned, stripped, duplicate_of), None

    def _clean(self, row: dict, text: str, attrs: dict[str, Any], ts: TenantState) -> tuple[str, dict[str, int]]:
        if row.get("source_kind") != "email":
            return text.strip(), {}
        own, quoted, stripped = split_quoted(text, str(attrs.get("subject") or ""), ts.sentences)
        sender = row.get("sender") or ""
        names = sender_names(sender, str(attrs.get("from_name") or ""))
        signed = strip_signature(own, ts.tails.get(sender, Counter()), names, text)
        own = unwrap(own)
        own_tokens, signed_tokens = count_tokens(own), count_tokens(signed)
        if own_tokens > signed_tokens:
            stripped["signature"] = own_tokens - signed_tokens
        ts.remember_tails(sender, (short_hash(ln) for ln in tail_lines(own)))
        cleaned = unwrap("\n\n".join(part for part in (signed.strip(), quoted.strip()) if part))
        return re.sub(r"\n{3,}", "\n\n", cleaned).strip(), stripped

    def process_batch(self, rows: Iterable[dict]) -> Iterator[tuple[Unit | None, dict | None]]:
        """Process rows in event-time order (ties by event_id), so replays give the same result."""
        for row in sorted(rows, key=event_order):
            yield self.process(row)

    @staticmethod
    def _kept(row: dict, text: str, stripped: dict[str, int], duplicate_of: str | None) -> Unit:
        return {**unit_of(row), "text": text, "stripped": stripped, "duplicate_of": duplicate_of}

    @staticmethod
    def _dropped(row: dict, reason: str, duplicate_of: str | None = None) -> dict:
        return {
            "tenant": row["tenant"],
            "event_id": row["event_id"],
            "conversation_id": row.get("conversation_id"),
            "event_time": row.get("event_time"),
            "reason": reason,
            "duplicate_of": duplicate_of,
        }


def event_order(row: Mapping[str, Any]) -> tuple:
    """Sort key: event time (untimed rows first), then event_id, so every replay orders alike."""
    t = row.get("event_time")
    return (t is not None, t.timestamp() if t is not None else 0.0, row["event_id"])


def describe_dropped(dropped: Iterable[dict]) -> str | None:
    """A readable count of dropped units by reason, e.g. "12 short acknowledgements, 1 auto-reply"."""
    counts = Counter(d["reason"] for d in dropped)
    parts = []
    for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        one, many = REASON_PHRASES.get(reason, (reason, reason))
        parts.append(f"{n} {one if n == 1 else many}")
    return ", ".join(parts) or None


def tenant_of(row: dict) -> str:
    return row["tenant"]
