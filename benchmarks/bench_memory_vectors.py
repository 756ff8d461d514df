"""Memory-vector encoders on real memories: MiniLM against its distilled static token vectors, texts per second.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_memory_vectors.py [--mix irc-enron] [--messages 1000]
       [--repeats 3] [--data ../shared/data]

The memories are the ones a backfill makes of the mix (``bench_backfill``'s
standalone stages: connector parsing, dedupe, segmentation, compression).
Each encoder embeds what the embedding stage embeds per memory: its header and
text, and each of its pieces (``memories.piece_embeddings``, which recall
reads). Both encoders are loaded and run once before timing. Prints one JSON
line: per encoder the median seconds and texts/s over the repeats, in this one
process, and the speed-up. Recall quality of the two is ``memtape eval recall``
with ``MEMTAPE_MODELS_MEMORY_VECTORS=static`` (BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_backfill import MIXES, SHARED, compress, dedupe, machine, parse, segment, text_mix  # noqa: E402

from memtape.schemas.records import memory_pieces  # noqa: E402
from memtape.transforms.encode import embed_texts, memory_text  # noqa: E402
from memtape.transforms.models import embedder  # noqa: E402
from memtape.transforms.static_embed import static_embeddings  # noqa: E402


def memory_texts(uris: list[str]) -> tuple[int, list[str]]:
    """(memories, every text the embedding stage encodes for them)."""
    memories = [memory for memory, _bundle in compress(segment(dedupe(parse(uris))))]
    return len(memories), [memory_text(m) for m in memories] + [p for m in memories for p in memory_pieces(m["text"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--mix", choices=MIXES, default="irc-enron")
    parser.add_argument("--messages", type=int, default=1000, help="cap per source")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="bench-vectors-") as work:
        memories, texts = memory_texts(text_mix(args.data, Path(work), args.messages, args.mix))
    encoders = {"minilm": embedder(), "static": static_embeddings()}
    seconds = {}
    for name, model in encoders.items():
        embed_texts(texts[:64], model)
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            embed_texts(texts, model)
            runs.append(time.perf_counter() - start)
        seconds[name] = statistics.median(runs)
    print(json.dumps({
        "benchmark": "memory_vectors", "mix": args.mix, "cap_per_source": args.messages, "memories": memories, "texts": len(texts),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "texts_per_s": {k: round(len(texts) / v, 1) for k, v in seconds.items()},
        "speedup": round(seconds["minilm"] / seconds["static"], 1), "repeats": args.repeats, "machine": machine(),
    }))


if __name__ == "__main__":
    main()
