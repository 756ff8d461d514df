"""Is it where the segmenter cuts or how many cuts it makes? Upper bounds that know the gold count, per signal.

Usage: python benchmarks/segment_ranking.py [--data-dir ../shared/data/segmentation] [--dialseg-every 4]

A segmenter can lose to "no cut" for two reasons: its gap scores rank the gold
gaps too low (ranking), or it cuts too often or too rarely at a fair ranking
(calibration). This separates them. Per dev set and per gap signal, one JSON
line: the AUC of gold gaps against all other gaps; the same with a gap scored by
its best neighbour within one against gaps at least 3 from gold (Pk forgives a
cut one unit off); and the Pk of a reference that is not causal: per dialogue,
``share`` of the gold number of cuts placed at the highest-scoring gaps, at
least k (Pk's window) apart. If no share beats no cut with a signal, calibrating
that signal cannot: its ranking is the problem.

Signals: the segmenter's gap scores (defaults, with the cue requirement off, so
the scores it cuts on before any cue is asked for); the discourse cue strength
of the unit after the gap (``memtape/transforms/cues.py``; ties broken by the gap
score); the gap score plus 4 times the cue; and window-level similarity: one
minus the cosine between the mean MiniLM vectors of the W units before and the
W after the gap (``block``), and its TextTiling depth against the highest block
similarity within W gaps either side (``depth``), for W of 1, 2, 4, 8 and W
adapted to the dialogue (half its expected episode length from its own drift,
as ``segment.EpisodeSegmenter.expected_episode`` measures it, over the whole
dialogue). MiniLM vectors come from the sweep's cache.
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np
from scipy.stats import rankdata

from memtape.evals.segmentation import _lengths, _score, scored, segment_rows, window_k
from memtape.transforms import segment
from memtape.transforms.cues import cue_strength
from sweep_segment import dev_sets, minilm_vectors

SHARES = (0.15, 0.25, 0.35, 0.5, 1.0)  # shares of the gold cut count in the reference
WINDOWS: tuple[int | str, ...] = (1, 2, 4, 8, "adaptive")
CUE_WEIGHT = 4.0
FAR = 3  # in the tolerant AUC, other gaps count only this far from any gold boundary


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a gold gap outscores another gap, ties counting half (Mann-Whitney)."""
    ranks = rankdata(np.concatenate([positive, negative]))
    n = len(positive)
    return round(float((ranks[:n].sum() - n * (n + 1) / 2) / (n * len(negative))), 3)


def oracle_pk(dialogues: Sequence[dict], ranked: Sequence[np.ndarray], share: float) -> float:
    """Pk of cutting, per dialogue, ``share`` of the gold cut count at the highest ``ranked`` gaps, at least k apart."""
    hyps = []
    for d, r in zip(dialogues, ranked):
        want, k = round(share * (len(d["segments"]) - 1)), window_k(d["segments"])
        cuts: list[int] = []
        for j in np.argsort(-r, kind="stable"):
            if len(cuts) >= want:
                break
            if j > 0 and all(abs(int(j) - c) >= k for c in cuts):
                cuts.append(int(j))
        hyps.append(_lengths(cuts, len(d["utterances"])))
    return _score(dialogues, hyps)["pk"]


def expected_episode(vectors: np.ndarray) -> float:
    """The dialogue's expected episode length from its neighbour and far similarity, as the segmenter estimates it."""
    lag, cap = segment.FAR_LAG, segment.MAX_EXPECTED_EPISODE
    near = float(np.mean(np.sum(vectors[1:] * vectors[:-1], 1))) if len(vectors) > 1 else 1.0
    far = float(np.mean(np.sum(vectors[lag:] * vectors[:-lag], 1))) if len(vectors) > lag else near
    return min(cap, (1 - far) / max(near - far, (1 - far) / cap))


def block_similarity(vectors: np.ndarray, width: int) -> np.ndarray:
    """Per gap j (before unit j), the cosine between the mean vectors of the ``width`` units either side; 1 at j = 0."""
    sums = np.concatenate([np.zeros((1, vectors.shape[1])), np.cumsum(vectors, 0)])
    out = np.ones(len(vectors))
    for j in range(1, len(vectors)):
        a, b = sums[j] - sums[max(0, j - width)], sums[min(len(vectors), j + width)] - sums[j]
        out[j] = a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9)
    return out


def depth(similarity: np.ndarray, radius: int) -> np.ndarray:
    """TextTiling depth: how far the similarity at a gap sits below the highest within ``radius`` gaps either side."""
    out = np.zeros(len(similarity))
    for j in range(1, len(similarity)):
        left, right = similarity[max(1, j - radius) : j + 1], similarity[j : j + radius + 1]
        out[j] = left.max() + right.max() - 2 * similarity[j]
    return out


def signals(dialogues: Sequence[dict], vectors: Sequence[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Every signal, one score per gap (index j: the gap before unit j; index 0 never cut)."""
    rows, _ = segment_rows(dialogues, segment.SegmenterConfig(cue_episode=float("inf")), vectors)
    score = [np.array([s for r in episodes for s in r["surprise"]]) for episodes in rows]
    cue = [np.array([cue_strength(u) for u in d["utterances"]], dtype=float) for d in dialogues]
    out = {"gap_score": score, "cue": [c + 1e-3 * s for c, s in zip(cue, score)],
           f"gap_score+{CUE_WEIGHT:g}cue": [s + CUE_WEIGHT * c for s, c in zip(score, cue)]}
    for width in WINDOWS:
        blocks, depths = [], []
        for v in vectors:
            w = max(1, round(expected_episode(v) / 2)) if width == "adaptive" else int(width)
            sim = block_similarity(v, w)
            blocks.append(1 - sim)
            depths.append(depth(sim, w))
        out[f"block_{width}"], out[f"depth_{width}"] = blocks, depths
    for ranked in out.values():
        for r in ranked:
            r[0] = -np.inf
    return out


def rank_quality(dialogues: Sequence[dict], ranked: Sequence[np.ndarray]) -> dict[str, float]:
    """AUC exact and within one, and the reference's Pk at each share of the gold count."""
    gold_s, other_s, near_s, far_s = [], [], [], []
    for i in scored(dialogues):
        r, gold = ranked[i], np.cumsum(dialogues[i]["segments"])[:-1]
        for j in range(1, len(r)):
            distance = int(np.abs(gold - j).min()) if len(gold) else 10**6
            (gold_s if distance == 0 else other_s).append(r[j])
            if distance == 0:
                near_s.append(r[max(1, j - 1) : j + 2].max())
            elif distance >= FAR:
                far_s.append(r[j])
    return {"auc": auc(np.array(gold_s), np.array(other_s)), "auc_within_one": auc(np.array(near_s), np.array(far_s)),
            **{f"pk_share_{s}": oracle_pk(dialogues, ranked, s) for s in SHARES}}


def main() -> None:
    for name, dialogues in dev_sets(__doc__.splitlines()[0]):
        vectors = minilm_vectors(dialogues)
        none = _score(dialogues, [[len(d["utterances"])] for d in dialogues])["pk"]
        for signal, ranked in signals(dialogues, vectors).items():
            print(json.dumps({"set": name, "signal": signal, "none_pk": none, **rank_quality(dialogues, ranked)}),
                  flush=True)


if __name__ == "__main__":
    main()
