"""MinHash sketches and LSH band keys: how the dedupe stage finds near-duplicate texts without comparing every pair.

A text's sketch is the minimum of NUM_PERM universal hashes over its word
3-shingles; banding the sketch turns "Jaccard above 0.5" into "shares a band
key" with high probability, so a candidate is found by dictionary lookup and
only candidates are compared. It holds no state (``state``) and no rules
(``rules``).
"""
from __future__ import annotations

import zlib

import numpy as np

from memtape import _textcore
from memtape.schemas.records import content_hash
from memtape.transforms.tokens import words

NUM_PERM = 126
LSH_BANDS = 42  # 42 bands of 3 rows: a pair at Jaccard 0.5 becomes a candidate with p > 0.99
LSH_ROWS = NUM_PERM // LSH_BANDS
SHINGLE_WORDS = 3
MIN_WORDS_FOR_SKETCH = 8  # shorter texts have too few shingles for a meaningful Jaccard estimate
MAX_SKETCH_WORDS = 600  # long newsletters are sketched by their opening, which keeps the cost per message flat
NEAR_DUP_JACCARD = 0.5
MINHASH_SEED = 7

_rng = np.random.default_rng(MINHASH_SEED)
_PERM_A = _rng.integers(1, 2**63, NUM_PERM, dtype=np.uint64) | np.uint64(1)
_PERM_B = _rng.integers(0, 2**63, NUM_PERM, dtype=np.uint64)
_BAND_MIX = _rng.integers(1, 2**63, LSH_ROWS, dtype=np.uint64) | np.uint64(1)
_BAND_SALT = _rng.integers(0, 2**63, LSH_BANDS, dtype=np.uint64)


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


def band_keys(sigs: np.ndarray) -> np.ndarray:
    """LSH band keys of one sketch (shape ``[NUM_PERM]``) or many (``[n, NUM_PERM]``): each band's rows mixed into one
    64-bit integer, salted by the band's index. Equal bands give equal keys; a rare collision of unequal ones only
    adds a candidate, which the Jaccard estimate then judges."""
    rows = sigs.reshape(*sigs.shape[:-1], LSH_BANDS, LSH_ROWS).astype(np.uint64)
    return (rows * _BAND_MIX).sum(axis=-1, dtype=np.uint64) ^ _BAND_SALT
