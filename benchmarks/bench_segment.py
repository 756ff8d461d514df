"""Throughput of episode segmentation (n-gram LM, refinement) on static and on MiniLM vectors, with MiniLM embedding beside it.

Usage: python benchmarks/bench_segment.py [--data PATH] [--repeats 3] [--embed-limit 512] [--irc-plot PNG]
Segments every dialogue of a DialSeg711-shaped file as one tenant's stream,
``--repeats`` times from a fresh tenant model, and prints one JSON object:
utterances/s on static vectors as the median of the repeats (wall clock, and
per CPU second of this process, which a shared machine distorts less), the
rate at which MiniLM embeds utterances on a sample, and the segmentation rate
on that sample's MiniLM vectors with the embedding excluded (the pipeline's
default, ``[models] surprise = "minilm"``). ``--irc-plot`` also segments the
first 1,400 messages of the shared #ubuntu IRC logs as one conversation with
the configured vectors, reports its episodes, and draws its surprise plot
(time on the x axis) to the given PNG for a person to look at.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from itertools import islice
from pathlib import Path

from memtape.evals.segmentation import load_dialogues, minilm_embeddings, segment_dialogues

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_DATA = SHARED / "segmentation" / "dialseg711.json"
IRC_LOGS = SHARED / "im" / "irc"
IRC_MESSAGES = 1400


def irc_plot(out: Path) -> dict:
    """Segment ``IRC_MESSAGES`` messages of the #ubuntu logs as one conversation and plot them to ``out``."""
    from memtape.commands.plot import plot_episodes
    from memtape.connectors.sources.irc import read_irc
    from memtape.transforms.models import embedder
    from memtape.transforms.segment import EpisodeSegmenter
    from memtape.transforms.segment_episodes import MINILM, configured_surprise
    from memtape.transforms.static_embed import static_embeddings

    messages = (r for r in read_irc(f"{IRC_LOGS}?channel=ubuntu", "bench") if getattr(r, "text", None))
    events = list(islice(messages, IRC_MESSAGES))
    units = [{"event_id": e.source_id, "tenant": "bench", "conversation_id": "ubuntu", "source_kind": "im",
              "sender": e.sender, "event_time": e.event_time, "text": e.text} for e in events]
    if configured_surprise() == MINILM:
        vectors = embedder().encode([u["text"] for u in units], normalize_embeddings=True)
        units = [dict(u, embedding=v) for u, v in zip(units, vectors)]
    segmenter = EpisodeSegmenter(static_embeddings())
    start = time.perf_counter()
    rows = segmenter.feed(units) + segmenter.flush()
    seconds = time.perf_counter() - start
    plot_episodes(rows, out, title=f"#ubuntu IRC, {len(units):,} messages, {len(rows)} episodes",
                  times={u["event_id"]: u["event_time"] for u in units})
    signals = [r["boundary_signal"] for r in rows]
    return {"irc_messages": len(units), "irc_episodes": len(rows), "irc_utterances_per_s": round(len(units) / seconds, 1),
            "irc_boundaries": {s: signals.count(s) for s in sorted(set(signals))}, "irc_plot": str(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--embed-limit", type=int, default=512, help="utterances MiniLM embeds for its rate")
    parser.add_argument("--irc-plot", type=Path, default=None, help="also segment and plot 1,400 IRC messages to this PNG")
    args = parser.parse_args()
    dialogues = load_dialogues(args.data)
    n = sum(len(d["utterances"]) for d in dialogues)
    segment_dialogues(dialogues[:5])  # load the static vectors outside the timing
    wall, cpu = [], []
    for _ in range(args.repeats):
        c0 = time.process_time()
        _, seconds = segment_dialogues(dialogues)
        wall.append(n / seconds)
        cpu.append(n / (time.process_time() - c0))
    sample, count = [], 0
    for d in dialogues:
        if count >= args.embed_limit:
            break
        sample.append(d)
        count += len(d["utterances"])
    minilm_embeddings(sample[:1])  # load MiniLM outside the timing
    vectors, embed_rate = minilm_embeddings(sample)
    c0 = time.process_time()
    _, minilm_seconds = segment_dialogues(sample, embeddings=vectors)
    minilm_cpu = time.process_time() - c0
    sampled = sum(len(d["utterances"]) for d in sample)
    print(json.dumps({
        "data": str(args.data), "utterances": n, "repeats": args.repeats,
        "segment_utterances_per_s": round(statistics.median(wall), 1),
        "segment_utterances_per_cpu_s": round(statistics.median(cpu), 1),
        "minilm_utterances_per_s": round(embed_rate, 1),
        "segment_on_minilm_vectors_utterances_per_s": round(sampled / minilm_seconds, 1),
        "segment_on_minilm_vectors_utterances_per_cpu_s": round(sampled / minilm_cpu, 1),
        **(irc_plot(args.irc_plot) if args.irc_plot else {}),
    }))


if __name__ == "__main__":
    main()
