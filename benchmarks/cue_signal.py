"""How well discourse cue phrases separate gold topic boundaries from other gaps, offline: a signal other than similarity.

Usage: python benchmarks/cue_signal.py [--data-dir ../shared/data/segmentation] [--dialseg-every 1]

The cue lexicon and the feature's form (``memtape/transforms/cues.py``, which
says why) were fixed from the literature before the feature was scored on any gold
segmentation (commit 98ae1cc), and not changed after. A unit's cue strength (0, 1
or 2) is scored on the gap before the unit.

Per dev set (DialSeg711, TIAGE dev, committee dev), one JSON line: the AUC of gold
gaps against all other gaps for the cue strength and for its two parts; the same
with a gap scored by its best neighbour within one against gaps at least 3 from
gold (Pk forgives a cut one unit off); the share of gold and other gaps the cue
fires on; and the AUC of the segmenter's own gap scores (defaults without the cue requirement, MiniLM vectors
from the sweep's cache) alone and with w times the cue added, which says whether
the cue adds to what the segmenter already sees. A cue that lowers the AUC on a
genre cannot be mixed into the score. Committee dev also gets a reference that is
not causal: per meeting, a share of the gold number of cuts placed at the highest
(gap score + w * cue), at least k apart, scored with Pk. BENCHMARKS.md has the
numbers and what the segmenter did with the cue.
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from memtape.evals.segmentation import _score, scored, segment_rows
from memtape.transforms.cues import cue_parts, cue_strength
from memtape.transforms.segment import SegmenterConfig
from segment_ranking import FAR, auc, oracle_pk
from sweep_segment import dev_sets, minilm_vectors

MIX_WEIGHTS = (0.5, 1.0, 2.0, 4.0)  # w in (gap score + w * cue)
COUNT_SHARES = (0.5, 0.65, 0.8, 1.0)  # shares of the gold cut count in the non-causal reference


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
    ranked = []
    for i, d in enumerate(dialogues):
        r = np.array([s for e in rows[i] for s in e["surprise"]]) + weight * np.array([cue_strength(u) for u in d["utterances"]])
        r[0] = -np.inf
        ranked.append(r)
    return oracle_pk(dialogues, ranked, share)


def main() -> None:
    for name, dialogues in dev_sets(__doc__.splitlines()[0]):
        rows, _ = segment_rows(dialogues, SegmenterConfig(cue_episode=float("inf")), minilm_vectors(dialogues))
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
