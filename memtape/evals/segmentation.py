"""``memtape eval segmentation``: Pk and WindowDiff of the episode segmenter against gold topic segments.

Reads dialogues shaped like DialSeg711 (``utterances``: list of strings,
``segments``: run lengths summing to the number of utterances), segments
each one as a conversation of a single tenant's stream (so the adaptive
model learns as it goes, as in production), and scores it beside three
baselines: Hearst's TextTiling (nltk, w=10, k=3, each utterance a paragraph),
a cut every 10 messages, and no cut at all. Pk (Beeferman et al.) and
WindowDiff (Pevzner & Hearst) use k = half the dialogue's mean gold segment
length, rounded and at least 2, computed by ``nltk.metrics.segmentation`` on
boundary strings that end with the final boundary, averaged over dialogues of
at least 4 utterances (the JSON states this). This module evaluates only; it
writes nothing.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import click
import numpy as np

from memtape.errors import UserError

FIXED_EVERY = 10
MIN_K = 2  # the usual floor on Pk's window: k = 1 only compares a unit with itself
MIN_UTTERANCES = 4  # shorter dialogues are skipped in scoring, as is usual
PK_DEFINITION = ("nltk.metrics.segmentation pk and windowdiff on boundary strings with a boundary after the last "
                 "utterance; k = round(mean gold segment length / 2), at least 2, per dialogue; dialogues of fewer "
                 "than 4 utterances skipped; mean over dialogues")
TEXTTILING_W, TEXTTILING_K = 10, 3
EMBED_BATCH = 64
EVAL_TENANT = "eval"


def boundaries(lengths: Sequence[int]) -> str:
    """NLTK boundary string: ``1`` after each unit that ends a segment, the last unit included."""
    out = ["0"] * int(sum(lengths))
    for end in np.cumsum(lengths):
        out[int(end) - 1] = "1"
    return "".join(out)


def window_k(gold: Sequence[int]) -> int:
    """Half the mean gold segment length, rounded, at least 2."""
    return max(MIN_K, int(round(float(np.mean(gold)) / 2)))


def pk(gold: str, hyp: str, k: int) -> float:
    """Beeferman's Pk, as NLTK computes it: the share of width-k windows that disagree on holding a boundary."""
    from nltk.metrics.segmentation import pk as nltk_pk

    return float(nltk_pk(gold, hyp, k))


def windowdiff(gold: str, hyp: str, k: int) -> float:
    """Pevzner and Hearst's WindowDiff, as NLTK computes it: the share of width-k windows whose boundary counts differ."""
    from nltk.metrics.segmentation import windowdiff as nltk_windowdiff

    return float(nltk_windowdiff(gold, hyp, k))


def load_dialogues(path: Path) -> list[dict[str, Any]]:
    """Dialogues with ``utterances`` and ``segments``; one clear error for anything else."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(data, list) or not data:
        raise UserError(f"{path}: expected a non-empty JSON list of dialogues")
    for i, d in enumerate(data):
        if not isinstance(d, dict) or not isinstance(d.get("utterances"), list) or not isinstance(d.get("segments"), list):
            raise UserError(f"{path}: dialogue {i} lacks 'utterances' and 'segments' lists")
        if sum(d["segments"]) != len(d["utterances"]) or not d["utterances"]:
            raise UserError(f"{path}: dialogue {i}: segments sum to {sum(d['segments'])}, not {len(d['utterances'])}")
    return data


def _lengths(cut_before: Sequence[int], n: int) -> list[int]:
    edges = [0, *sorted(c for c in set(cut_before) if 0 < c < n), n]
    return [b - a for a, b in zip(edges, edges[1:])]


def fixed_lengths(n: int, every: int = FIXED_EVERY) -> list[int]:
    return _lengths(range(every, n, every), n)


def texttiling_lengths(utterances: Sequence[str]) -> list[int]:
    """nltk's TextTiling with each utterance a paragraph; too-short dialogues stay one segment."""
    from nltk.tokenize.texttiling import TextTilingTokenizer
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    tiler = TextTilingTokenizer(w=TEXTTILING_W, k=TEXTTILING_K, stopwords=sorted(ENGLISH_STOP_WORDS))
    clean = [" ".join(u.split()) or "." for u in utterances]
    try:
        tiles = tiler.tokenize("\n\n".join(clean))
    except ValueError:
        return [len(utterances)]
    counts = [len([p for p in tile.split("\n\n") if p.strip()]) for tile in tiles]
    counts = [c for c in counts if c]
    return counts if sum(counts) == len(utterances) else [len(utterances)]


def segment_rows(dialogues: Sequence[dict[str, Any]], config: Any = None,
                 embeddings: Sequence[np.ndarray] | None = None) -> tuple[list[list[dict[str, Any]]], float]:
    """Our segmenter over all dialogues as one tenant's stream; returns the episode rows per dialogue and seconds spent.

    ``embeddings``, one array per dialogue, stand in for the static vectors, as when a caller already embeds units.
    """
    from memtape.transforms.segment import EpisodeSegmenter, SegmenterConfig, TenantModel
    from memtape.transforms.static_embed import static_embeddings

    static = static_embeddings()
    config = config or SegmenterConfig()
    model = TenantModel(static.vocab_size, config)
    out: list[list[dict[str, Any]]] = []
    start = time.perf_counter()
    for i, d in enumerate(dialogues):
        segmenter = EpisodeSegmenter(static, config, model)
        units = [{"event_id": f"{i}:{j}", "tenant": EVAL_TENANT, "conversation_id": str(d.get("dial_id", i)),
                  "source_kind": "im", "sender": None, "event_time": None, "text": u}
                 for j, u in enumerate(d["utterances"])]
        if embeddings is not None:
            units = [dict(u, embedding=v) for u, v in zip(units, embeddings[i])]
        out.append(segmenter.feed(units) + segmenter.flush())
    return out, time.perf_counter() - start


def segment_dialogues(dialogues: Sequence[dict[str, Any]], config: Any = None,
                      embeddings: Sequence[np.ndarray] | None = None) -> tuple[list[list[int]], float]:
    """Like ``segment_rows``, but the segment lengths per dialogue, as the scores take them."""
    rows, seconds = segment_rows(dialogues, config, embeddings)
    return [[len(r["member_ids"]) for r in episodes] for episodes in rows], seconds


def minilm_embeddings(dialogues: Sequence[dict[str, Any]]) -> tuple[list[np.ndarray], float]:
    """MiniLM sentence embeddings per dialogue, and the utterances per second it took to make them."""
    from memtape.transforms.models import embedder

    model = embedder()
    texts = [u for d in dialogues for u in d["utterances"]]
    start = time.perf_counter()
    flat = model.encode(texts, batch_size=EMBED_BATCH, normalize_embeddings=True)
    rate = len(texts) / (time.perf_counter() - start)
    edges = np.cumsum([0] + [len(d["utterances"]) for d in dialogues])
    return [flat[a:b] for a, b in zip(edges, edges[1:])], rate


def scored(dialogues: Sequence[dict[str, Any]]) -> list[int]:
    """Indices of the dialogues that count: those of at least ``MIN_UTTERANCES`` utterances."""
    return [i for i, d in enumerate(dialogues) if len(d["utterances"]) >= MIN_UTTERANCES]


def _score(dialogues: Sequence[dict[str, Any]], hyps: Sequence[Sequence[int]]) -> dict[str, float]:
    p, w = [], []
    for i in scored(dialogues):
        gold, hyp, k = boundaries(dialogues[i]["segments"]), boundaries(hyps[i]), window_k(dialogues[i]["segments"])
        p.append(pk(gold, hyp, k))
        w.append(windowdiff(gold, hyp, k))
    return {"pk": round(float(np.mean(p)), 4), "windowdiff": round(float(np.mean(w)), 4)}


def segments_per_dialogue(dialogues: Sequence[dict[str, Any]], hyps: Sequence[Sequence[int]]) -> dict[str, float]:
    """Mean segment count per scored dialogue, predicted and gold: over- or under-cutting at a glance."""
    keep = scored(dialogues)
    return {"predicted": round(float(np.mean([len(hyps[i]) for i in keep])), 2),
            "gold": round(float(np.mean([len(dialogues[i]["segments"]) for i in keep])), 2)}


def evaluate(dialogues: Sequence[dict[str, Any]], embeddings: str = "static") -> dict[str, Any]:
    """Scores of our segmenter and the baselines; ``embeddings="minilm"`` feeds MiniLM vectors, timed apart."""
    if not scored(dialogues):
        raise UserError(f"no dialogue of at least {MIN_UTTERANCES} utterances to score")
    vectors, embed_rate = minilm_embeddings(dialogues) if embeddings == "minilm" else (None, None)
    hyps, seconds = segment_dialogues(dialogues, embeddings=vectors)
    n = sum(len(d["utterances"]) for d in dialogues)
    result: dict[str, Any] = {
        **_score(dialogues, hyps),
        "segments_per_dialogue": segments_per_dialogue(dialogues, hyps),
        "pk_definition": PK_DEFINITION,
        "dialogues": len(dialogues),
        "scored_dialogues": len(scored(dialogues)),
        "utterances": n,
        "utterances_per_s": round(n / seconds, 1),
        "embeddings": embeddings,
        "baselines": {
            "texttiling": _score(dialogues, [texttiling_lengths(d["utterances"]) for d in dialogues]),
            "fixed10": _score(dialogues, [fixed_lengths(len(d["utterances"])) for d in dialogues]),
            "none": _score(dialogues, [[len(d["utterances"])] for d in dialogues]),
        },
    }
    if embed_rate is not None:
        result["embedding_utterances_per_s"] = round(embed_rate, 1)
        result["end_to_end_utterances_per_s"] = round(n / (seconds + n / embed_rate), 1)
    return result


@click.command()
@click.option("--data", "data", required=True, type=click.Path(path_type=Path),
              help="Dialogues JSON: a list of {utterances: [str], segments: [run lengths]}.")
@click.option("--format", "fmt", type=click.Choice(["json", "text"]), default="json", show_default=True)
@click.option("--embeddings", type=click.Choice(["static", "minilm"]), default=None,
              help="Unit vectors: static MiniLM token embeddings, or full MiniLM sentence embeddings (timed apart) "
                   "[default: the pipeline's, [models] surprise; static when that names a causal LM].")
def command(data: Path, fmt: str, embeddings: str | None) -> None:
    """Score episode segmentation (Pk, WindowDiff) against gold segments, beside TextTiling, fixed-10 and no cuts."""
    if embeddings is None:
        from memtape.transforms.segment_episodes import MINILM, configured_surprise

        embeddings = MINILM if configured_surprise() == MINILM else "static"
    result = evaluate(load_dialogues(data), embeddings)
    if fmt == "json":
        click.echo(json.dumps(result))
        return
    spd = result["segments_per_dialogue"]
    click.echo(f"ours ({embeddings})  pk {result['pk']:.4f}  windowdiff {result['windowdiff']:.4f}  "
               f"segments/dialogue {spd['predicted']:.2f} (gold {spd['gold']:.2f})  "
               f"({result['utterances_per_s']:.0f} utterances/s)")
    for name, s in result["baselines"].items():
        click.echo(f"{name:<15} pk {s['pk']:.4f}  windowdiff {s['windowdiff']:.4f}")
