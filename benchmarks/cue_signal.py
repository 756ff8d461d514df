"""How well discourse cue phrases (``memtape.transforms.cues``) separate gold topic boundaries from other gaps, offline.

Usage: python benchmarks/cue_signal.py [--data-dir ../shared/data/segmentation] [--dialseg-every 1]

Per dev set (DialSeg711, TIAGE dev, committee dev), one JSON line: the AUC of gold
gaps against all other gaps for the cue strength (0 to 2) of the unit after the gap
and for its two parts (a closing acknowledgement opening the unit, a transition
marker in its opening); the same with a gap scored by its best neighbour within one
against gaps at least 3 from gold (Pk forgives a cut one unit off); the share of gold
and other gaps the cue fires on; and the AUC of the segmenter's own gap scores
(defaults, MiniLM vectors from the sweep's cache) alone and with w times the cue
added, which says whether the cue adds to what the segmenter already sees. A cue
that lowers the AUC on a genre cannot be mixed into the score. Committee dev also
gets a reference that is not causal: per meeting, a share of the gold number of
cuts placed at the highest (gap score + w * cue), at least k apart, scored with Pk.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.stats import rankdata

from memtape.evals.segmentation import _lengths, _score, load_dialogues, scored, segment_rows, window_k
from memtape.transforms.cues import cue_parts
from sweep_segment import DEFAULT_DIR, SETS, minilm_vectors

MIX_WEIGHTS = (0.5, 1.0, 2.0, 4.0)  # w in (gap score + w * cue)
COUNT_SHARES = (0.5, 0.65, 0.8, 1.0)  # shares of the gold cut count in the non-causal reference
FAR = 3  # in the tolerant AUC, other gaps count only this far from any gold boundary


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
        strength = np.array([sum(cue_parts(u)) for u in d["utterances"]])
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
