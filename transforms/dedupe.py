"""Dedupe stage: drop or trim low-entropy units before the expensive stages run.

Each ``raw_events`` row becomes either a kept unit (its text cleaned of quoted
replies, already-stored forwarded text and learned signatures) or a dropped
unit with a reason and, for duplicates, the event it repeats, so nothing
disappears without a trace. Per-tenant state (content hashes, MinHash LSH
sketches, seen sentences, per-sender tails) is serialisable and carried between
micro-batches. Rendered records (health) pass untouched: the same reading at
another time, or for another patient, is a new fact. This module never edits ``raw_events`` rows: cleaned text lives
only on the unit it yields.
"""
from __future__ import annotations

import base64
import dataclasses
import functools
import itertools
import json
import re
import zlib
from collections import Counter
from typing import Any, Callable, Iterable, Iterator

import apache_beam as beam
import numpy as np

from memtape import _textcore
from memtape.schemas.records import STRUCTURED_KINDS, Unit, content_hash, content_hashes, unit_of
from memtape.transforms.tokens import WORD_RE, content_words, count_tokens, has_content_words, sentence_spans, unwrap, words

NUM_PERM = 126
LSH_BANDS = 42  # 42 bands of 3 rows: a pair at Jaccard 0.5 becomes a candidate with p > 0.99
LSH_ROWS = NUM_PERM // LSH_BANDS
SHINGLE_WORDS = 3
MIN_WORDS_FOR_SKETCH = 8  # shorter texts have too few shingles for a meaningful Jaccard estimate
MAX_SKETCH_WORDS = 600  # long newsletters are sketched by their opening, which keeps the cost per message flat
NEAR_DUP_JACCARD = 0.5
MINHASH_SEED = 7
DELTA_MIN_CONTENT_WORDS = 3  # a near-duplicate that adds this much new content keeps its new sentences
ACK_MAX_WORDS = 8
REPETITIVE_MIN_CHARS = 64
REPETITIVE_MAX_ZLIB_RATIO = 0.2  # text that compresses below this share is a repeated pattern
AUTO_REPLY_MAX_WORDS = 120
SIGNATURE_TAIL_LINES = 6  # lines at the end of a sender's own text that may form a signature
SIGNATURE_MAX_SHARE = 0.5
VALEDICTION_MAX_TRAILING_WORDS = 6  # a closing line may be followed only by short name/title lines
HEADER_MAX_LINES = 60  # a quoted header longer than this is not a header
SAME_BLOCK_MAX_NEWLINES = 4  # a forward line and the quoted header just below it start one block
# Bounds on what one dedupe scope remembers, newest kept (see TenantState). On the shared data a repeat's original
# lies at most ~5,000 messages back, within every bound; state at the bounds is about 5 MB of JSON.
MAX_REMEMBERED_HASHES = 20_000
MAX_REMEMBERED_SENTENCES = 20_000
MAX_REMEMBERED_SKETCHES = 5_000
MAX_TAIL_LINES_PER_SENDER = 256
SHORT_HASH_BYTES = 8  # sentence and tail-line hashes: many are remembered, 64 bits keep them apart

KEPT, DROPPED, STATE = "kept", "dropped", "state"

ACK_WORDS = frozenset(
    """ok okay k kk thanks thank thx ty tks cheers you u lol lmao rofl haha hahaha hehe heh yay cool great nice
    awesome perfect sure noted ack alright right got it np welcome much so very too oh ah wow omg good sounds will
    do done hi hey hello bye cya see ya later night morning congrats congratulations yes yeah yep yup agreed
    a the for that this all sir""".split()
)


# The rules below ask of the same text in turn: lower-case it once for all of them.
_lowered = functools.lru_cache(maxsize=4)(str.lower)


@dataclasses.dataclass(frozen=True)
class _Clued:
    """A regex and literal clues (lower case), one of which every match contains, or a match of ``clue_pattern``.

    Most mail holds none of them, and ``in`` finds that far faster than the
    regex engine can fail: ASCII text without a clue skips the regex (for ASCII
    text, case-insensitive matching is comparing lower case). A clue pattern
    that opens with a literal ("on \\d\\d?/") stands for a family of clues in one scan.
    """

    regex: re.Pattern
    clues: tuple[str, ...]
    clue_pattern: re.Pattern | None = None

    def may_match(self, text: str) -> bool:
        if not text.isascii():
            return True
        lowered = _lowered(text)
        return any(clue in lowered for clue in self.clues) or bool(self.clue_pattern and self.clue_pattern.search(lowered))

    def search(self, text: str, pos: int = 0) -> re.Match | None:
        return self.regex.search(text, pos) if self.may_match(text) else None

    def finditer(self, text: str) -> Iterator[re.Match]:
        return self.regex.finditer(text) if self.may_match(text) else iter(())

    def findall(self, text: str) -> list[str]:
        return self.regex.findall(text) if self.may_match(text) else []

    def sub(self, repl: str, text: str) -> str:
        return self.regex.sub(repl, text) if self.may_match(text) else text


_LAUGH_RE = re.compile(r"^(?:ha|he|ja|lo|xd)+h?l?$")
_AUTO_REPLY_RE = _Clued(re.compile(
    r"\b(?:out of (?:the )?office|auto(?:matic)?[- ]?reply|autoreply|away from (?:my|the) (?:desk|office)"
    r"|(?:on|in) (?:vacation|holiday|leave) until|limited access to (?:e-?mail|my e-?mail)|will be out of the office)\b",
    re.I,
), ("out of office", "out of the office", "auto", "away from", "vacation until", "holiday until", "leave until", "limited access to"))
_BLOCK_START_RES = {
    "reply": _Clued(re.compile(
        r"^[ \t]*-{2,}\s*Original Message\s*-{2,}[ \t]*$"
        r"|^[ \t]*On\b.{0,200}\bwrote:[ \t]*$"
        r"|^.{1,120}\bon \d{1,2}/\d{1,2}/\d{2,4} \d{1,2}:\d{2}(?::\d{2})?\s*[AP]M\s*$",
        re.I | re.M,
    ), ("original message", "wrote:"), re.compile(r"on \d\d?/")),
    "forward": _Clued(re.compile(
        r"^[ \t]*-{2,}[ \t]*Forwarded (?:by\b.*|message[ \t]*-{2,}[ \t]*)$|^[ \t]*Begin forwarded message:[ \t]*$",
        re.I | re.M,
    ), ("forwarded",)),
}
_OUTLOOK_HEADER_RE = _Clued(re.compile(r"^[ \t]*From:[ \t].+\n[ \t]*(?:Sent|Date):\s", re.I | re.M), ("from:",))
_ATTACHMENT_LINE_RE = _Clued(re.compile(r"^[ \t]*- [^\n]+\.\w{2,4}[ \t]*$", re.M), ("- ",))
_HEADER_END_RE = re.compile(r"^\s*Subject:.*$", re.I | re.M)
_FORWARD_SUBJECT_RE = re.compile(r"^\s*(?:fw|fwd)\s*:", re.I)
_QUOTED_LINE_RE = _Clued(re.compile(r"^[ \t]*>.*(?:\n|$)", re.M), (">",))
_SIG_DELIMITER_RE = _Clued(re.compile(r"^-- ?$", re.M), ("--",))
_VALEDICTION_RE = re.compile(
    r"^\s*(?:thanks|thank you|many thanks|regards|best|best regards|kind regards|warm regards|cheers|sincerely"
    r"|all the best|take care|yours)\b[\s,.!-]*(?:\w+[.!]?)?\s*$",
    re.I,
)
_DISCLAIMER_RE = _Clued(re.compile(
    r"^\s*(?:\**\s*)?(?:confidentiality notice|this (?:e-?mail|message|communication|transmission)\b.{0,80}"
    r"\b(?:confidential|privileged|intended)|the information (?:contained )?in this (?:e-?mail|message))",
    re.I | re.M,
), ("confidential", "privileged", "intended", "the information"))

_rng = np.random.default_rng(MINHASH_SEED)
_PERM_A = _rng.integers(1, 2**63, NUM_PERM, dtype=np.uint64) | np.uint64(1)
_PERM_B = _rng.integers(0, 2**63, NUM_PERM, dtype=np.uint64)
_BAND_MIX = _rng.integers(1, 2**63, LSH_ROWS, dtype=np.uint64) | np.uint64(1)
_BAND_SALT = _rng.integers(0, 2**63, LSH_BANDS, dtype=np.uint64)

REASON_PHRASES = {
    "exact_duplicate": ("exact duplicate", "exact duplicates"),
    "near_duplicate": ("near-duplicate", "near-duplicates"),
    "short_ack": ("short acknowledgement", "short acknowledgements"),
    "emoji_only": ("emoji-only message", "emoji-only messages"),
    "repetitive": ("repetitive message", "repetitive messages"),
    "auto_reply": ("auto-reply", "auto-replies"),
    "empty": ("empty message", "empty messages"),
}


def _short_hash(text: str) -> str:
    """A 64-bit content hash: sentence and tail-line memories hold many of them, and JSON carries each one."""
    return content_hash(text, digest_size=SHORT_HASH_BYTES)


def _short_hashes(text: str, spans: list[tuple[int, int]]) -> list[str]:
    """``_short_hash`` of each span of ``text``, the text case-folded once for all of them."""
    return content_hashes(text, spans, digest_size=SHORT_HASH_BYTES)


def minhash(text: str) -> np.ndarray | None:
    """MinHash signature over word 3-shingles, or None when the text is too short to compare by overlap."""
    x = _shingle_hashes(text)
    if x is None:
        return None
    # Multiply-shift hashing: uint64 arithmetic wraps, the high 32 bits form a universal hash.
    return np.frombuffer(_textcore.min_hashes(x, _PERM_A, _PERM_B), dtype=np.uint32)


def _shingle_hashes(text: str) -> bytes | None:
    """CRC-32 of the UTF-8 of each shingle (its case-folded words joined by spaces) of the text's opening words, as
    uint64 bytes, or None below MIN_WORDS_FOR_SKETCH words. A shingle repeated in the text only repeats a row, which
    leaves every minimum as it is."""
    opening = text[: MAX_SKETCH_WORDS * 12]
    if not opening.isascii():
        return _py_shingle_hashes(opening)
    count, packed = _textcore.shingle_hashes(opening, MAX_SKETCH_WORDS, SHINGLE_WORDS)
    return packed if count >= MIN_WORDS_FOR_SKETCH else None


def _py_shingle_hashes(opening: str) -> bytes | None:
    """``_shingle_hashes``'s definition in Python, for any text."""
    ws = words(opening)[:MAX_SKETCH_WORDS]
    if len(ws) < MIN_WORDS_FOR_SKETCH:
        return None
    # Each shingle's UTF-8 is its words' UTF-8 joined by spaces: encode once, hash in C loops.
    encoded = " ".join(ws).encode("utf-8", "surrogatepass").split(b" ")
    shingles = map(b" ".join, zip(*(encoded[i:] for i in range(SHINGLE_WORDS))))
    return np.fromiter(map(zlib.crc32, shingles), dtype=np.uint64, count=len(encoded) - SHINGLE_WORDS + 1).tobytes()


def jaccard_estimate(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a == b)) / NUM_PERM


def is_near_duplicate(a: str, b: str) -> bool:
    """Whether two texts are near-duplicates by the same sketch test the stage applies."""
    sa, sb = minhash(a), minhash(b)
    if sa is None or sb is None:
        return content_hash(a) == content_hash(b)
    return jaccard_estimate(sa, sb) >= NEAR_DUP_JACCARD


def _band_keys(sigs: np.ndarray) -> np.ndarray:
    """LSH band keys of one sketch (shape ``[NUM_PERM]``) or many (``[n, NUM_PERM]``): each band's rows mixed into one
    64-bit integer, salted by the band's index. Equal bands give equal keys; a rare collision of unequal ones only
    adds a candidate, which the Jaccard estimate then judges."""
    rows = sigs.reshape(*sigs.shape[:-1], LSH_BANDS, LSH_ROWS).astype(np.uint64)
    return (rows * _BAND_MIX).sum(axis=-1, dtype=np.uint64) ^ _BAND_SALT


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
        for key in _band_keys(self.sketches.pop(event_id)).tolist():
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
            for (event_id, _), sig, keys in zip(sketches, sigs, _band_keys(sigs).tolist()):
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


def _attrs(row: dict) -> dict[str, Any]:
    attrs = row.get("attrs")
    if isinstance(attrs, dict):
        return attrs
    try:
        parsed = json.loads(attrs) if attrs else {}
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def low_entropy_reason(text: str) -> str | None:
    """Why a unit carries (almost) no information, or None.

    Acknowledgements and laughter are short and drawn from a tiny vocabulary;
    long repeated patterns compress to almost nothing under zlib.
    """
    stripped = text.strip()
    if not stripped:
        return "empty"
    ws = [m.group().casefold() for m in itertools.islice(WORD_RE.finditer(stripped), ACK_MAX_WORDS + 1)]
    if not ws:
        return "emoji_only"
    if len(ws) <= ACK_MAX_WORDS and all(w in ACK_WORDS or _LAUGH_RE.match(w) for w in ws):
        return "short_ack"
    raw = stripped.encode("utf-8", "surrogatepass")
    if len(raw) >= REPETITIVE_MIN_CHARS and len(zlib.compress(raw)) / len(raw) < REPETITIVE_MAX_ZLIB_RATIO:
        return "repetitive"
    return None


def is_auto_reply(text: str, subject: str) -> bool:
    """Out-of-office and automatic replies: a stock phrase in the subject or a short body."""
    if _AUTO_REPLY_RE.search(subject or ""):
        return True
    return bool(_AUTO_REPLY_RE.search(text)) and len(words(text)) <= AUTO_REPLY_MAX_WORDS


def _block_starts(text: str) -> list[tuple[int, str]]:
    starts = [(m.start(), kind) for kind, rx in _BLOCK_START_RES.items() for m in rx.finditer(text)]
    starts += [(m.start(), "reply") for m in _OUTLOOK_HEADER_RE.finditer(text)]
    merged: list[tuple[int, str]] = []
    for pos, kind in sorted(starts):
        # A header line right after a block start ("-----Original Message-----\nFrom: ...") is the same block.
        if merged and text.count("\n", merged[-1][0], pos) <= SAME_BLOCK_MAX_NEWLINES:
            continue
        merged.append((pos, kind))
    return merged


def _block_body(block: str) -> str:
    """The quoted message without its From/To/Subject header lines."""
    lines = block.split("\n")
    head = "\n".join(lines[:HEADER_MAX_LINES])
    end = _HEADER_END_RE.search(head)
    if end:
        cut = head.count("\n", 0, end.end()) + 1
    else:  # no Subject line: the header is the first paragraph
        cut = next((i for i, ln in enumerate(lines[:HEADER_MAX_LINES]) if i and not ln.strip()), 1)
    return "\n".join(lines[cut:])


def _unseen_sentences(text: str, seen: set[str]) -> str:
    text = unwrap(text)
    spans = sentence_spans(text)
    return "\n".join(text[a:b] for (a, b), h in zip(spans, _short_hashes(text, spans)) if h not in seen)


def split_quoted(text: str, subject: str, seen: set[str]) -> tuple[str, str, dict[str, int]]:
    """(own text, kept quoted text, stripped token counts) of one email body.

    Quoted replies go when the author wrote something of their own; forwarded
    blocks keep only the sentences this tenant has not stored before.
    """
    stripped: Counter = Counter()
    quoted_lines = "".join(_QUOTED_LINE_RE.findall(text))
    body = _QUOTED_LINE_RE.sub("", text) if quoted_lines else text
    starts = _block_starts(body)
    own = body[: starts[0][0]] if starts else body
    has_own = has_content_words(_ATTACHMENT_LINE_RE.sub("", own))
    if quoted_lines:
        if has_own:
            stripped["quoted_reply"] += count_tokens(quoted_lines)
        else:
            own = own + "\n" + re.sub(r"^[ \t]*>+ ?", "", quoted_lines, flags=re.M)
    kept: list[str] = []
    forward_subject = bool(_FORWARD_SUBJECT_RE.match(subject or ""))
    for i, (pos, kind) in enumerate(starts):
        block = body[pos : starts[i + 1][0] if i + 1 < len(starts) else len(body)]
        is_forward = kind == "forward" or forward_subject
        if not is_forward and has_own:
            stripped["quoted_reply"] += count_tokens(block)
            continue
        fresh = _unseen_sentences(_block_body(block), seen)
        stripped["forwarded_known" if is_forward else "quoted_reply"] += count_tokens(block) - count_tokens(fresh)
        if fresh.strip():
            kept.append(fresh)
    return own, "\n\n".join(kept), dict(stripped)


def _tail_lines(text: str) -> list[str]:
    return [ln for ln in text.rstrip().split("\n") if ln.strip()][-SIGNATURE_TAIL_LINES:]


def strip_signature(text: str, tails: Counter) -> str:
    """``text`` without its signature, disclaimer or sign-off.

    A line this sender already ended an earlier message with is a learned
    signature line, unless such lines make up most of the text (then it is a
    re-sent message, for near-duplicate detection to judge). On first sight, a
    ``-- `` delimiter, a legal disclaimer or a closing word followed only by
    short name lines mark where the tail begins.
    """
    lines = text.rstrip().split("\n")
    end = len(lines)
    while end > 0 and (not lines[end - 1].strip() or tails.get(_short_hash(lines[end - 1]), 0) > 0):
        end -= 1
    if end < len(lines) and count_tokens("\n".join(lines[:end])) < (1 - SIGNATURE_MAX_SHARE) * count_tokens(text):
        end = len(lines)
    cut = end
    head = "\n".join(lines[:end])
    for rx in (_SIG_DELIMITER_RE, _DISCLAIMER_RE):
        m = rx.search(head, len(head) // 2)
        if m:
            cut = min(cut, head.count("\n", 0, m.start()))
    for i in range(max(0, end - SIGNATURE_TAIL_LINES), end):
        trailing = [ln for ln in lines[i + 1 : end] if ln.strip()]
        if _VALEDICTION_RE.match(lines[i]) and all(len(ln.split()) <= VALEDICTION_MAX_TRAILING_WORDS for ln in trailing):
            cut = min(cut, i)
            break
    kept = "\n".join(lines[:cut]).rstrip()
    return kept if has_content_words(kept) else text.rstrip()


class Deduper:
    """Applies the dedupe rules to rows of one or many tenants, in the order given, updating the state."""

    def __init__(self, state: DedupeState | None = None, scope_of: Callable[[dict], str] | None = None) -> None:
        self.state = state or DedupeState()
        self._scope_of = scope_of or _tenant_of

    def process(self, row: dict) -> tuple[dict | None, dict | None]:
        """(kept unit, None) or (None, dropped unit) for one raw_events row."""
        text = (row.get("text") or "").replace("\r\n", "\n")
        if row.get("source_kind") in STRUCTURED_KINDS:  # a reading equal to another one is still a new fact
            return self._kept(row, text.strip(), {}, None), None
        ts = self.state.tenant(self._scope_of(row))
        attrs = _attrs(row)
        subject = str(attrs.get("subject") or "")
        raw_hash = content_hash(text)
        first = ts.first_with(raw_hash, row["event_id"])
        if first is not None:
            return None, self._dropped(row, "exact_duplicate", first)
        if row.get("source_kind") == "email" and is_auto_reply(text, subject):
            return None, self._dropped(row, "auto_reply")
        cleaned, stripped = self._clean(row, text, subject, ts)
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
            keys = _band_keys(sig).tolist()
            duplicate_of = ts.near_duplicate_of(sig, keys)
            if duplicate_of is None:
                ts.add_sketch(row["event_id"], sig, keys)
            else:
                delta = _unseen_sentences(cleaned, ts.sentences)
                if len(content_words(delta)) < DELTA_MIN_CONTENT_WORDS:
                    return None, self._dropped(row, "near_duplicate", duplicate_of)
                stripped["near_duplicate"] = count_tokens(cleaned) - count_tokens(delta)
                cleaned = delta
        unwrapped = unwrap(cleaned)
        ts.remember_sentences(_short_hashes(unwrapped, sentence_spans(unwrapped)))
        return self._kept(row, cleaned, stripped, duplicate_of), None

    def _clean(self, row: dict, text: str, subject: str, ts: TenantState) -> tuple[str, dict[str, int]]:
        if row.get("source_kind") != "email":
            return text.strip(), {}
        own, quoted, stripped = split_quoted(text, subject, ts.sentences)
        own = unwrap(own)
        sender = row.get("sender") or ""
        signed = strip_signature(own, ts.tails.get(sender, Counter()))
        own_tokens, signed_tokens = count_tokens(own), count_tokens(signed)
        if own_tokens > signed_tokens:
            stripped["signature"] = own_tokens - signed_tokens
        ts.remember_tails(sender, (_short_hash(ln) for ln in _tail_lines(own)))
        cleaned = unwrap("\n\n".join(part for part in (signed.strip(), quoted.strip()) if part))
        return re.sub(r"\n{3,}", "\n\n", cleaned).strip(), stripped

    def process_batch(self, rows: Iterable[dict]) -> Iterator[tuple[dict | None, dict | None]]:
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


def event_order(row: dict) -> tuple:
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


class _DedupeScopeFn(beam.DoFn):
    """Runs one scope's rows of a micro-batch in event order against the state carried for that scope."""

    def __init__(self, scope_of: Callable[[dict], str]) -> None:
        self._scope_of = scope_of

    def process(self, element: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[Any]:
        scope, grouped = element
        rows = list(grouped["rows"])
        if rows:  # the carried state of a scope with nothing new stays as it is
            yield from self._dedupe(scope, rows, next(iter(grouped["state"]), None))

    def _dedupe(self, scope: str, rows: list[dict], carried: str | None) -> Iterator[Any]:
        state = TenantState.from_dict(json.loads(carried)) if carried else TenantState()
        deduper = Deduper(DedupeState({scope: state}), self._scope_of)
        for kept, dropped in deduper.process_batch(rows):
            if kept is not None:
                yield kept
            else:
                yield beam.pvalue.TaggedOutput(DROPPED, dropped)
        yield beam.pvalue.TaggedOutput(STATE, (scope, json.dumps(state.to_dict())))


class Dedupe(beam.PTransform):
    """raw_events rows -> kept units (main), dropped units ``dropped``, per-scope state ``state``.

    Rows are deduplicated within a state scope: the tenant by default, or any
    finer key ``scope_of(row)`` gives (the streaming job uses tenant plus Kafka
    partition, so each partition's state moves with it). The input is the rows,
    or ``{"rows": rows, "state": state}`` where ``state`` holds ``(scope,
    TenantState JSON)`` pairs from the previous micro-batch, joined to the rows
    by scope in the pipeline (never pickled into a DoFn); the ``state`` output
    holds the same pairs for the next one.
    """

    def __init__(self, scope_of: Callable[[dict], str] | None = None) -> None:
        super().__init__()
        self._scope_of = scope_of or _tenant_of

    def expand(self, inputs: beam.PCollection | dict[str, beam.PCollection]) -> Any:
        rows, state = (inputs["rows"], inputs["state"]) if isinstance(inputs, dict) else (inputs, None)
        if state is None:
            state = rows.pipeline | "NoCarriedState" >> beam.Create([])
        return (
            {"rows": rows | "KeyByScope" >> beam.Map(lambda row, key=self._scope_of: (key(row), row)), "state": state}
            | "GroupByScope" >> beam.CoGroupByKey()
            | "DedupeInEventOrder" >> beam.ParDo(_DedupeScopeFn(self._scope_of)).with_outputs(DROPPED, STATE, main=KEPT)
        )


def _tenant_of(row: dict) -> str:
    return row["tenant"]
