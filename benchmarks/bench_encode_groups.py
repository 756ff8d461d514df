"""Encoding memories with their pieces: one call (a batch pads to its longest text) against length-grouped calls.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_encode_groups.py [--batches 4] [--repeats 3]
       [--data ../shared/data]

Builds what one ``EmbedMemories`` batch encodes from real LoCoMo turns: four
memory texts of 40 consecutive turns each (cut by the model at 256 word pieces)
and 20 turns of each as pieces, ``--batches`` times. Each repeat encodes them
the way the stage did before (one ``model.encode`` call per batch, so a batch
of 64 holds memory texts and pieces together) and the way it does now
(``transforms.encode._encode``: groups of like length), alternating, at the
same precision. Prints one JSON line: CPU and wall seconds per way (medians),
their ratio, and the largest difference between the two ways' vectors.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from memtape.transforms import encode

TURNS_PER_MEMORY, PIECES_PER_MEMORY, MEMORIES_PER_BATCH = 40, 20, 4


def locomo_turns(path: Path) -> list[str]:
    turns: list[str] = []

    def walk(x: object) -> None:
        if isinstance(x, dict):
            if isinstance(x.get("text"), str):
                turns.append(x["text"])
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(json.loads(path.read_text()))
    return turns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = parser.parse_args()
    turns = locomo_turns(Path(args.data) / "locomo" / "locomo_dev.json")
    batches = []
    for b in range(args.batches):
        starts = [(b * MEMORIES_PER_BATCH + k) * TURNS_PER_MEMORY for k in range(MEMORIES_PER_BATCH)]
        batches.append([" ".join(turns[s:s + TURNS_PER_MEMORY]) for s in starts]
                       + [t for s in starts for t in turns[s:s + PIECES_PER_MEMORY]])
    model = encode.memory_encoder()

    def one_call(texts: list[str]) -> np.ndarray:
        with encode._precision(model, False):
            v = model.encode(texts, batch_size=encode.CPU_BATCH_SIZE, convert_to_tensor=True, show_progress_bar=False)
        v = v.float().cpu().numpy()
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def grouped(texts: list[str]) -> np.ndarray:
        return encode._encode(texts, model, encode.CPU_BATCH_SIZE, False)

    ways = {"one_call": one_call, "grouped": grouped}
    times: dict[str, dict[str, list[float]]] = {w: {"cpu": [], "wall": []} for w in ways}
    grouped(batches[0])  # warm-up
    for _ in range(args.repeats):
        for name, way in ways.items():
            cpu, wall = time.process_time(), time.perf_counter()
            for batch in batches:
                way(batch)
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    medians = {w: {k: round(statistics.median(v), 2) for k, v in t.items()} for w, t in times.items()}
    print(json.dumps({
        "texts": sum(len(b) for b in batches), "bfloat16": encode.bfloat16_pays(), "medians_s": medians,
        "cpu_ratio": round(medians["one_call"]["cpu"] / medians["grouped"]["cpu"], 2),
        "wall_ratio": round(medians["one_call"]["wall"] / medians["grouped"]["wall"], 2),
        "max_abs_diff": float(np.abs(one_call(batches[0]) - grouped(batches[0])).max()),
    }))


if __name__ == "__main__":
    main()
