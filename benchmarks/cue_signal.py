"""How well discourse cue phrases separate gold topic boundaries from other gaps, offline: a signal other than similarity.

Usage: python benchmarks/cue_signal.py [--data-dir ../shared/data/segmentation] [--dialseg-every 1]

Similarity misses the topic changes a conversation manages out loud: a chair who
closes one member's questions and hands the floor to the next, a caller who
thanks and turns to a new task. Cue phrases are the classic signal for those
across genres (Hirschberg & Litman 1993; Passonneau & Litman 1997; Galley et al.
2003 on meetings). The lexicon and the feature's form below were fixed from that
literature and general dialogue knowledge before the feature was scored on any
gold segmentation (commit 98ae1cc), and not changed after:

- a closing acknowledgement among the unit's first ``ACK_WORDS`` words: the
  pre-closing tokens of an exchange (okay, all right, right; Schegloff & Sacks
  1973), thanks, and the assessments that end one (great, good, fine, perfect,
  excellent). Placed first, they close what came before.
- a transition marker within the unit's first ``OPENING_WORDS`` words, where a
  turn's topic-management move sits: now, next, anyway, finally, by the way,
  moving / move on, turn to, another question, one more question, the final,
  let's talk about, speaking of. "so" counts only as the unit's first word
  (elsewhere it is mostly an intensifier); "well" is left out (it mostly
  prefaces a dispreferred answer, not a new topic).

A unit's cue strength is the number of the two kinds present (0, 1 or 2: a
hand-over usually does both), scored on the gap before the unit. Names are not cues.

Per dev set (DialSeg711, TIAGE dev, committee dev), one JSON line: the AUC of gold
gaps against all other gaps for the cue strength and for its two parts; the same
with a gap scored by its best neighbour within one against gaps at least 3 from
gold (Pk forgives a cut one unit off); the share of gold and other gaps the cue
fires on; and the AUC of the segmenter's own gap scores (defaults, MiniLM vectors
from the sweep's cache) alone and with w times the cue added, which says whether
the cue adds to what the segmenter already sees. A cue that lowers the AUC on a
genre cannot be mixed into the score. Committee dev also gets a reference that is
not causal: per meeting, a share of the gold number of cuts placed at the highest
(gap score + w * cue), at least k apart, scored with Pk. BENCHMARKS.md has the
numbers and what the segmenter did with the cue.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.stats import rankdata

from memtape.evals.segmentation import _lengths, _score, load_dialogues, scored, segment_rows, window_k
from sweep_segment import DEFAULT_DIR, SETS, minilm_vectors

MIX_WEIGHTS = (0.5, 1.0, 2.0, 4.0)  # w in (gap score + w * cue)
COUNT_SHARES = (0.5, 0.65, 0.8, 1.0)  # shares of the gold cut count in the non-causal reference
FAR = 3  # in the tolerant AUC, other gaps count only this far from any gold boundary
# the cue lexicon, fixed a priori (module docstring)
ACK_WORDS = 3  # a closing acknowledgement opens the unit: "Okay, thank you." / "Right, thanks."
OPENING_WORDS = 12  # a transition marker sits in the turn's first clause or two
CLOSING_ACKS: tuple[tuple[str, ...], ...] = (
    ("okay",), ("ok",), ("alright",), ("all", "right"), ("right",), ("thank", "you"), ("thanks",),
    ("great",), ("good",), ("fine",), ("perfect",), ("excellent",),
)
TRANSITIONS: tuple[tuple[str, ...], ...] = (
    ("now",), ("next",), ("anyway",), ("anyways",), ("finally",), ("by", "the", "way"), ("moving", "on"),
    ("move", "on"), ("turn", "to"), ("another", "question"), ("one", "more", "question"), ("the", "final"),
    ("let's", "talk", "about"), ("speaking", "of"),
)
INITIAL_TRANSITIONS: tuple[tuple[str, ...], ...] = (("so",),)  # markers only in first position
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def _has(words: list[str], phrases: tuple[tuple[str, ...], ...], within: int) -> bool:
    """Whether one of ``phrases`` starts within the first ``within`` words."""
    return any(tuple(words[i : i + len(p)]) == p for p in phrases for i in range(min(within, len(words))))


def cue_parts(text: str) -> tuple[bool, bool]:
    """Whether the unit opens with a closing acknowledgement, and whether its opening holds a transition marker."""
    words = _words(text)
    closing = _has(words, CLOSING_ACKS, ACK_WORDS)
    transition = _has(words, TRANSITIONS, OPENING_WORDS) or _has(words, INITIAL_TRANSITIONS, 1)
    return closing, transition


def cue_strength(text: str) -> int:
    """0, 1 or 2: a closing acknowledgement opening the unit, a transition marker in its opening, or both."""
    return sum(cue_parts(text))


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a gold gap outscores another gap, ties counting half (Mann-Whitney)."""
    ranks = rankdata(np.concatenate([positive, negative]))
    n = len(positive)
    return round(float((ranks[:n].sum() - n * (n + 1) / 2) / (n * len(negative))), 3)


def gaps(dialogues: Sequence[dict], rows: Sequence[list[dict]]) -> dict[str, np.ndarray]:
    """Per gap of every scored dialogue: cue parts, gap score, gold flag, distance to gold, best cue within one."""
    cols: dict[str, list] = {k: [] for k in ("closing", "transition", "score", "gold", "distance", "near_cue")}
    for i in scored(dialogues):
        d = dialogues[i]
        parts = np.array([cue_parts(u) for u in d["utterances"]], dtype=int)
        strength = parts.sum(1)
        scores = np.array([s for r in rows[i] for s in r["surprise"]])
        gold = np.cumsum(d["segments"])[:-1]
        for j in range(1, len(strength)):
            cols["closing"].append(parts[j, 0])
            cols["transition"].append(parts[j, 1])
            cols["score"].append(scores[j])
            cols["distance"].append(int(np.abs(gold - j).min()) if len(gold) else 10**6)
            cols["gold"].append(cols["distance"][-1] == 0)
            cols["near_cue"].append(strength[max(1, j - 1) : j + 2].max())
    return {k: np.asarray(v) for k, v in cols.items()}


def reference(dialogues: Sequence[dict], rows: Sequence[list[dict]], weight: float, share: float) -> float:
    """Pk of cutting, per dialogue, ``share`` of the gold cut count at the highest (gap score + w * cue), k apart."""
    hyps = []
    for i, d in enumerate(dialogues):
        strength = np.array([cue_strength(u) for u in d["utterances"]])
        ranked = np.array([s for r in rows[i] for s in r["surprise"]]) + weight * strength
        ranked[0] = -np.inf
        want, k = round(share * (len(d["segments"]) - 1)), window_k(d["segments"])
        cuts: list[int] = []
        for j in np.argsort(-ranked, kind="stable"):
            if len(cuts) >= want:
                break
            if j > 0 and all(abs(int(j) - c) >= k for c in cuts):
                cuts.append(int(j))
        hyps.append(_lengths(cuts, len(d["utterances"])))
    return _score(dialogues, hyps)["pk"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--dialseg-every", type=int, default=1, help="keep every Nth DialSeg711 dialogue")
    args = parser.parse_args()
    for name, file in SETS.items():
        dialogues = load_dialogues(args.data_dir / file)[:: args.dialseg_every if name == "dialseg711" else 1]
        rows, _ = segment_rows(dialogues, None, minilm_vectors(dialogues))
        g = gaps(dialogues, rows)
        gold, far = g["gold"], g["distance"] >= FAR
        cue = g["closing"] + g["transition"]
        out = {
            "set": name, "gold_gaps": int(gold.sum()), "other_gaps": int((~gold).sum()),
            "auc": {"cue": auc(cue[gold], cue[~gold]), "closing": auc(g["closing"][gold], g["closing"][~gold]),
                    "transition": auc(g["transition"][gold], g["transition"][~gold]),
                    "cue_within_one": auc(g["near_cue"][gold], g["near_cue"][far])},
            "fires_on": {"gold": round(float((cue[gold] > 0).mean()), 3), "other": round(float((cue[~gold] > 0).mean()), 3)},
            "gap_score_auc": {"alone": auc(g["score"][gold], g["score"][~gold]),
                              **{f"plus_{w}_cue": auc((g["score"] + w * cue)[gold], (g["score"] + w * cue)[~gold])
                                 for w in MIX_WEIGHTS}},
        }
        if name == "committee_dev":
            out["reference_pk"] = {f"w{w}_share{s}": reference(dialogues, rows, w, s)
                                   for w in (0.0, *MIX_WEIGHTS) for s in COUNT_SHARES}
            out["none_pk"] = _score(dialogues, [[len(d["utterances"])] for d in dialogues])["pk"]
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
