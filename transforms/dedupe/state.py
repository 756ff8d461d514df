"""The carried dedupe state: what one scope's earlier units left behind, bounded, and its JSON form.

Each memory is an insertion-ordered dict trimmed to a bound, newest kept, so a
long-lived tenant's state (read and written by every micro-batch) stays the
same size. Serialisation lists every memory oldest first, so eviction continues
in order after a reload. It decides nothing about a unit (``deduper`` does).
"""
from __future__ import annotations

import base64
import dataclasses
import itertools
import json
from collections import Counter
from typing import Any, Iterable

import numpy as np

from memtape.transforms.dedupe.sketch import NEAR_DUP_JACCARD, NUM_PERM, band_keys, jaccard_estimate

# Bounds on what one dedupe scope remembers, newest kept (see TenantState). On the shared data a repeat's original
# lies at most ~5,000 messages back, within every bound; state at the bounds is about 5 MB of JSON.
MAX_REMEMBERED_HASHES = 20_000
MAX_REMEMBERED_SENTENCES = 20_000
MAX_REMEMBERED_SKETCHES = 5_000
MAX_TAIL_LINES_PER_SENDER = 256


def _remember(memory: dict, items: Iterable[tuple[Any, Any]], limit: int) -> None:
    """Insert or refresh each key as the newest entry of an insertion-ordered dict, then drop the oldest over ``limit``:
    the newest ``limit`` stay, as trimming after every insert would leave them."""
    for key, value in items:
        memory.pop(key, None)
        memory[key] = value
    while len(memory) > limit:
        del memory[next(iter(memory))]


@dataclasses.dataclass
class TenantState:
    """What one scope's earlier units left behind, enough to recognise their content again.

    Each memory is bounded, newest kept: a long-lived tenant's state (read and
    written by every micro-batch) stays the same size, and a repeat further back
    than the bound is kept as new content rather than dropped.
    """

    hashes: dict[str, str] = dataclasses.field(default_factory=dict)  # content hash -> first event_id, oldest first
    sentences: dict[str, None] = dataclasses.field(default_factory=dict)  # short hashes of stored sentences, oldest first
    sketches: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # event_id -> MinHash, oldest first
    # LSH band key -> the event_id holding it, or a list when several do (most keys have one holder, and a string,
    # unlike a list, adds nothing for the garbage collector to trace: loading a full state is 4x faster).
    bands: dict[int, str | list[str]] = dataclasses.field(default_factory=dict)
    tails: dict[str, Counter] = dataclasses.field(default_factory=dict)  # sender -> tail line hash counts

    def first_with(self, content: str, event_id: str) -> str | None:
        """The event that first carried this content hash (now refreshed as recently seen), or None when the content
        is new, and ``event_id`` is remembered as its first."""
        first = self.hashes.get(content)
        _remember(self.hashes, ((content, first or event_id),), MAX_REMEMBERED_HASHES)
        return first

    def remember_sentences(self, sentence_hashes: Iterable[str]) -> None:
        _remember(self.sentences, zip(sentence_hashes, itertools.repeat(None)), MAX_REMEMBERED_SENTENCES)

    def remember_tails(self, sender: str, line_hashes: Iterable[str]) -> None:
        """Count the tail lines a sender ended a message with, keeping the most frequent (the newest among equals)."""
        tails = self.tails.setdefault(sender, Counter())
        tails.update(line_hashes)
        if len(tails) > MAX_TAIL_LINES_PER_SENDER:
            ranked = sorted(enumerate(tails.items()), key=lambda p: (p[1][1], p[0]), reverse=True)
            self.tails[sender] = Counter(dict(item for _, item in sorted(ranked[:MAX_TAIL_LINES_PER_SENDER])))

    def near_duplicate_of(self, sig: np.ndarray, keys: list[int]) -> str | None:
        """The remembered event whose sketch is most like ``sig`` (band keys ``keys``) at NEAR_DUP_JACCARD or above, or None."""
        best, best_j = None, NEAR_DUP_JACCARD
        estimates: dict[str, float] = {}  # a candidate recurs in every band it shares; estimate it once
        for key in keys:
            holders = self.bands.get(key, ())
            for event_id in (holders,) if isinstance(holders, str) else holders:
                j = estimates.get(event_id)
                if j is None:
                    j = estimates[event_id] = jaccard_estimate(sig, self.sketches[event_id])
                if j >= best_j:  # ties go to the candidate met last, as before
                    best, best_j = event_id, j
        return best

    def add_sketch(self, event_id: str, sig: np.ndarray, keys: list[int]) -> None:
        """Remember a sketch and its band keys, forgetting the oldest over the bound."""
        if event_id in self.sketches:
            return
        self.sketches[event_id] = sig
        for key in keys:
            holders = self.bands.get(key)
            if holders is None:
                self.bands[key] = event_id
            elif isinstance(holders, str):
                self.bands[key] = [holders, event_id]
            else:
                holders.append(event_id)
        while len(self.sketches) > MAX_REMEMBERED_SKETCHES:
            self._forget_sketch(next(iter(self.sketches)))

    def _forget_sketch(self, event_id: str) -> None:
        for key in band_keys(self.sketches.pop(event_id)).tolist():
            holders = self.bands[key]
            if isinstance(holders, str):
                del self.bands[key]
            else:
                holders.remove(event_id)
                if len(holders) == 1:
                    self.bands[key] = holders[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state; every memory is listed oldest first, so eviction continues in order after a reload."""
        return {
            "hashes": list(self.hashes.items()),
            "sentences": list(self.sentences),
            "sketches": {k: base64.b64encode(v.tobytes()).decode() for k, v in self.sketches.items()},
            "tails": {s: dict(c) for s, c in self.tails.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TenantState:
        """The state ``to_dict`` wrote (older states kept hashes as a mapping and sentences sorted: both still load)."""
        hashes = data.get("hashes", {})
        hashes = list(hashes.items()) if isinstance(hashes, dict) else hashes
        state = cls(hashes=dict(hashes[-MAX_REMEMBERED_HASHES:]),
                    sentences=dict.fromkeys(list(data.get("sentences", ()))[-MAX_REMEMBERED_SENTENCES:]),
                    tails={s: Counter(c) for s, c in data.get("tails", {}).items()})
        sketches = list(data.get("sketches", {}).items())[-MAX_REMEMBERED_SKETCHES:]
        if sketches:
            blob = b"".join(base64.b64decode(b64) for _, b64 in sketches)
            sigs = np.frombuffer(blob, dtype=np.uint32).reshape(-1, NUM_PERM).copy()
            for (event_id, _), sig, keys in zip(sketches, sigs, band_keys(sigs).tolist()):
                state.add_sketch(event_id, sig, keys)
        return state


@dataclasses.dataclass
class DedupeState:
    """Per-tenant dedupe memory, carried between micro-batches as JSON."""

    tenants: dict[str, TenantState] = dataclasses.field(default_factory=dict)

    def tenant(self, tenant: str) -> TenantState:
        return self.tenants.setdefault(tenant, TenantState())

    def to_json(self) -> str:
        return json.dumps({t: s.to_dict() for t, s in self.tenants.items()}, sort_keys=True)

    @classmethod
    def from_json(cls, blob: str | None) -> DedupeState:
        if not blob:
            return cls()
        return cls({t: TenantState.from_dict(d) for t, d in json.loads(blob).items()})
