"""Dedupe stage: drop or trim low-entropy units before the expensive stages run.

Each ``raw_events`` row becomes either a kept unit (its text cleaned of quoted
replies, already-stored forwarded text and signatures, learned or first seen)
or a dropped unit with a reason and, for duplicates, the event it repeats, so
nothing disappears without a trace. Per-tenant state (content hashes, MinHash LSH
sketches, seen sentences, per-sender tails) is serialisable and carried between
micro-batches. Rendered records (health) pass untouched: the same reading at
another time, or for another patient, is a new fact. This package never edits
``raw_events`` rows: cleaned text lives only on the unit it yields.

The stage is a package, one job a module: ``rules`` (what a text's own content
says), ``sketch`` (MinHash/LSH near-duplicate search), ``state`` (the bounded
carried memory and its JSON), ``deduper`` (the decision per row) and ``stage``
(the Beam transform). The public names stay importable from here.
"""
from memtape.transforms.dedupe.deduper import REASON_PHRASES, Deduper, describe_dropped, event_order
from memtape.transforms.dedupe.rules import is_auto_reply, low_entropy_reason, split_quoted, strip_signature
from memtape.transforms.dedupe.sketch import NEAR_DUP_JACCARD, is_near_duplicate, jaccard_estimate, minhash
from memtape.transforms.dedupe.stage import DROPPED, KEPT, STATE, Dedupe
from memtape.transforms.dedupe.state import DedupeState, TenantState

__all__ = [
    "DROPPED", "KEPT", "NEAR_DUP_JACCARD", "REASON_PHRASES", "STATE", "Dedupe", "DedupeState", "Deduper", "TenantState",
    "describe_dropped", "event_order", "is_auto_reply", "is_near_duplicate", "jaccard_estimate", "low_entropy_reason",
    "minhash", "split_quoted", "strip_signature",
]
