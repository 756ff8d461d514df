"""Throughput of dedupe + compression (no embeddings), with MiniLM embedding throughput beside it.

Usage: python benchmarks/bench_compress.py [--data PATH ...] [--repeats 3] [--embed-limit 512] [--device auto] [--passes]
Prints one JSON object per data set: messages/s as the median of the repeats
(wall clock, and per CPU second of this process, which shared machines
distort less), and memories (and messages) embedded per second on the chosen device.
``--passes`` adds what each text pass a message needs costs per character, timed
alone over the raw texts (the fastest of the repeats), through the compiled text
core the pipeline runs and through the pass's Python definition, with their ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import zlib
from pathlib import Path
from typing import Callable

from memtape.evals.compression import compress_episodes, locomo_runs, maildir_rows, thread_windows
from memtape.transforms.compress import DEFAULT_BUDGET_RATIO

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_DATA = [SHARED / "locomo" / "locomo_dev.json", SHARED / "email" / "skilling-j"]


def _load(path: Path) -> tuple[list[dict], list[list[dict]]]:
    if path.suffix == ".json":
        rows, episodes, _ = locomo_runs(path)
        return rows, episodes
    rows = maildir_rows(path, "bench")
    return rows, thread_windows(rows)


def bench(path: Path, repeats: int, embed_limit: int, device: str | None) -> dict:
    from memtape.transforms.encode import embed_texts, memory_text
    from memtape.transforms.models import embedder, pick_device

    rows, episodes = _load(path)
    seconds, cpu_seconds = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        memories, _, _ = compress_episodes(rows, episodes, DEFAULT_BUDGET_RATIO)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    model = embedder(device=device)
    texts = [memory_text(m) for m in memories[:embed_limit]]
    embed_texts(texts[:8], model)  # warm-up
    start = time.perf_counter()
    embed_texts(texts, model)
    embed_s = time.perf_counter() - start
    messages_covered = sum(len(m["raw_event_ids"]) for m in memories[:embed_limit])
    return {
        "data": str(path),
        "messages": len(rows),
        "episodes": len(episodes),
        "dedupe_compress_messages_per_s": round(len(rows) / statistics.median(seconds), 1),
        "dedupe_compress_runs_s": [round(s, 3) for s in seconds],
        # CPU time of this process: the rate one free core gives, whatever else shares the machine.
        "dedupe_compress_messages_per_cpu_s": round(len(rows) / statistics.median(cpu_seconds), 1),
        "embed_device": pick_device(device),
        "embed_memories_per_s": round(len(texts) / embed_s, 1),
        "embed_messages_per_s": round(messages_covered / embed_s, 1),
    }


def pass_costs(rows: list[dict], repeats: int) -> dict[str, dict[str, float]]:
    """Nanoseconds per character of each text pass alone over the raw texts: through the compiled text core (what the
    pipeline runs) and through the Python definition beside it, where the pass has one, with their ratio."""
    from memtape.schemas.records import content_hash, normalized
    from memtape.transforms import compress, tokens
    from memtape.transforms.dedupe import sketch

    texts = [row.get("text") or "" for row in rows]
    unwrapped = [tokens.unwrap(text) for text in texts]
    sentences = [[text[a:b] for a, b in tokens.sentence_spans(text)] for text in unwrapped]
    passes: dict[str, tuple[Callable[[], object], Callable[[], object] | None]] = {
        "content_hash": (lambda: [content_hash(text) for text in texts], lambda: [normalized(text).encode() for text in texts]),
        "zlib": (lambda: [zlib.compress(text.encode()) for text in texts], None),
        "minhash": (lambda: [sketch.minhash(text) for text in texts], None),
        "shingles": (lambda: [sketch._shingle_hashes(text) for text in texts],
                     lambda: [sketch._py_shingle_hashes(text[: sketch.MAX_SKETCH_WORDS * 12]) for text in texts]),
        "unwrap": (lambda: [tokens.unwrap(text) for text in texts], lambda: [tokens._py_unwrap(text) for text in texts]),
        "sentence_spans": (lambda: [tokens.sentence_spans(text) for text in unwrapped],
                           lambda: [tokens._py_sentence_spans(text) for text in unwrapped]),
        "count_tokens": (lambda: [[tokens.count_tokens(s) for s in unit] for unit in sentences],
                         lambda: [[len(tokens.TOKEN_RE.findall(s)) for s in unit] for unit in sentences]),
        "word_weights": (lambda: [[compress._word_weights(s, frozenset()) for s in unit] for unit in sentences],
                         lambda: [[compress._py_word_weights(s, frozenset()) for s in unit] for unit in sentences]),
    }
    chars = sum(map(len, texts))
    ascii_share = sum(len(text) for text in texts if text.isascii()) / max(chars, 1)

    def ns_per_char(run: Callable[[], object]) -> float:
        return min(_seconds(run) for _ in range(repeats)) / chars * 1e9

    costs: dict[str, dict[str, float]] = {}
    for name, (pipeline, python) in passes.items():
        costs[name] = {"pipeline": round(ns_per_char(pipeline), 1)}
        if python is not None:
            costs[name]["python"] = round(ns_per_char(python), 1)
            costs[name]["python_over_pipeline"] = round(costs[name]["python"] / costs[name]["pipeline"], 2)
    costs["sum"] = {"pipeline": round(sum(c["pipeline"] for c in costs.values()), 1), "ascii_share_of_chars": round(ascii_share, 4)}
    return costs


def _seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", help="LoCoMo .json or Maildir folder (repeatable)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--embed-limit", type=int, default=512, help="memories to embed for the embedding rate")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default)")
    parser.add_argument("--passes", action="store_true", help="add each text pass's nanoseconds per character")
    args = parser.parse_args()
    for path in args.data or DEFAULT_DATA:
        report = bench(path, args.repeats, args.embed_limit, args.device)
        if args.passes:
            report["pass_ns_per_char"] = pass_costs(_load(path)[0], args.repeats)
        print(json.dumps(report))


if __name__ == "__main__":
    main()
