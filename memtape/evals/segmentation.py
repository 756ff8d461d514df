"""``memtape eval segmentation``: Pk and WindowDiff of the episode segmenter against gold topic segments.

Reads dialogues shaped like DialSeg711 (``utterances``: list of strings,
``segments``: run lengths summing to the number of utterances), segments
each one as a conversation of a single tenant's stream (so the adaptive
model learns as it goes, as in production), and scores it beside three
baselines: Hearst's TextTiling (nltk, w=10, k=3, each utterance a paragraph),
a cut every 10 messages, and no cut at all. Pk (Beeferman et al.) and
WindowDiff (Pevzner & Hearst) use k = half the dialogue's mean gold segment
length, with nltk's window convention, averaged over dialogues. This module
evaluates only; it writes nothing.
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
TEXTTILING_W, TEXTTILING_K = 10, 3
EMBED_BATCH = 64
EVAL_TENANT = "eval"


def boundaries(lengths: Sequence[int]) -> np.ndarray:
    """Boolean per unit: True where a segment ends after it (never after the last unit)."""
    out = np.zeros(int(sum(lengths)), dtype=bool)
    ends = np.cumsum(lengths)[:-1]
    out[ends - 1] = True
    return out


def window_k(gold: Sequence[int]) -> int:
    """Half the mean gold segment length, rounded, at least 1."""
    return max(1, int(round(float(np.mean(gold)) / 2)))


def _windows(b: np.ndarray, k: int) -> np.ndarray:
    """Boundary counts in every window of k consecutive positions (nltk's ``range(len - k + 1)``)."""
    c = np.concatenate([[0], np.cumsum(b)])
    return c[k:] - c[:-k]


def pk(gold: np.ndarray, hyp: np.ndarray, k: int) -> float:
    """Probability that a window of width k disagrees on whether its ends are in one segment."""
    if len(gold) < k:
        return 0.0
    return float(np.mean((_windows(gold, k) > 0) != (_windows(hyp, k) > 0)))


def windowdiff(gold: np.ndarray, hyp: np.ndarray, k: int) -> float:
    """Share of windows of width k whose boundary counts differ."""
    if len(gold) < k:
        return 0.0
    return float(np.mean(_windows(gold, k) != _windows(hyp, k)))


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


def segment_dialogues(dialogues: Sequence[dict[str, Any]], config: Any = None,
                      embeddings: Sequence[np.ndarray] | None = None) -> tuple[list[list[int]], float]:
    """Our segmenter over all dialogues as one tenant's stream; returns lengths per dialogue and seconds spent.

    ``embeddings``, one array per dialogue, stand in for the static vectors, as when a caller already embeds units.
    """
    from memtape.transforms.segment import EpisodeSegmenter, SegmenterConfig, TenantModel
    from memtape.transforms.static_embed import static_embeddings

    static = static_embeddings()
    config = config or SegmenterConfig()
    model = TenantModel(static.vocab_size, config)
    out: list[list[int]] = []
    start = time.perf_counter()
    for i, d in enumerate(dialogues):
        segmenter = EpisodeSegmenter(static, config, model)
        units = [{"event_id": f"{i}:{j}", "tenant": EVAL_TENANT, "conversation_id": str(d.get("dial_id", i)),
                  "source_kind": "im", "sender": None, "event_time": None, "text": u}
                 for j, u in enumerate(d["utterances"])]
        if embeddings is not None:
            units = [dict(u, embedding=v) for u, v in zip(units, embeddings[i])]
        rows = segmenter.feed(units) + segmenter.flush()
        out.append([len(r["member_ids"]) for r in rows])
    return out, time.perf_counter() - start


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


def _score(dialogues: Sequence[dict[str, Any]], hyps: Sequence[Sequence[int]]) -> dict[str, float]:
    p, w = [], []
    for d, h in zip(dialogues, hyps):
        gold, k = boundaries(d["segments"]), window_k(d["segments"])
        p.append(pk(gold, boundaries(h), k))
        w.append(windowdiff(gold, boundaries(h), k))
    return {"pk": round(float(np.mean(p)), 4), "windowdiff": round(float(np.mean(w)), 4)}


def evaluate(dialogues: Sequence[dict[str, Any]], embeddings: str = "static") -> dict[str, Any]:
    """Scores of our segmenter and the baselines; ``embeddings="minilm"`` feeds MiniLM vectors, timed apart."""
    vectors, embed_rate = minilm_embeddings(dialogues) if embeddings == "minilm" else (None, None)
    hyps, seconds = segment_dialogues(dialogues, embeddings=vectors)
    n = sum(len(d["utterances"]) for d in dialogues)
    result: dict[str, Any] = {
        **_score(dialogues, hyps),
        "dialogues": len(dialogues),
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
@click.option("--embeddings", type=click.Choice(["static", "minilm"]), default="static", show_default=True,
              help="Unit vectors: static MiniLM token embeddings, or full MiniLM sentence embeddings (timed apart).")
def command(data: Path, fmt: str, embeddings: str) -> None:
    """Score episode segmentation (Pk, WindowDiff) against gold segments, beside TextTiling, fixed-10 and no cuts."""
    result = evaluate(load_dialogues(data), embeddings)
    if fmt == "json":
        click.echo(json.dumps(result))
        return
    click.echo(f"ours ({embeddings})  pk {result['pk']:.4f}  windowdiff {result['windowdiff']:.4f}  "
               f"({result['utterances_per_s']:.0f} utterances/s)")
    for name, s in result["baselines"].items():
        click.echo(f"{name:<15} pk {s['pk']:.4f}  windowdiff {s['windowdiff']:.4f}")
