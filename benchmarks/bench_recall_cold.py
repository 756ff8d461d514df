"""Cold recall: one ``memtape recall`` process against a bare process that loads MiniLM and encodes the query.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_recall_cold.py [--repeats 5] [--home DIR]
Backfills the repo's team-chat sample (``samples/jsonl/team-chat.jsonl``) into a
temporary store (or uses ``--home``), then times, alternating, whole
processes from start to exit: ``memtape recall QUERY --tenant T`` and a bare
``python -c`` that imports memtape's embedder, loads the packaged MiniLM and
encodes the same query (the floor under any recall that embeds its query).
Prints one JSON line: each side's median wall seconds and their ratio
(target <= 1.5).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "jsonl" / "team-chat.jsonl"
TENANT = "cold"
QUERY = "When did the launch review move to?"
TARGET_RATIO = 1.5
BARE = ("from memtape.transforms.encode import embed_texts; "
        f"import sys; v = embed_texts([{QUERY!r}]); assert v.shape == (1, 384); sys.stdout.write('ok')")


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--home", default=None, help="a store holding tenant 'cold' [default: backfill the sample into a temporary one]")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        home = args.home or str(Path(tmp) / "store")
        if args.home is None:
            subprocess.run([sys.executable, "-m", "memtape", "backfill", f"jsonl:{SAMPLE}", "--tenant", TENANT, "--home", home],
                           env=env, check=True, capture_output=True)
        recall = [sys.executable, "-m", "memtape", "recall", QUERY, "--tenant", TENANT, "--home", home]
        bare = [sys.executable, "-c", BARE]
        timed(bare, env)  # the first run of either warms the page cache for both
        recall_s, bare_s = [], []
        for _ in range(args.repeats):
            recall_s.append(timed(recall, env))
            bare_s.append(timed(bare, env))
    ratio = statistics.median(recall_s) / statistics.median(bare_s)
    print(json.dumps({
        "benchmark": "recall_cold", "repeats": args.repeats, "query": QUERY,
        "recall_median_s": round(statistics.median(recall_s), 2), "bare_median_s": round(statistics.median(bare_s), 2),
        "ratio": round(ratio, 2), "meets": ratio <= TARGET_RATIO,
        "recall_s": [round(x, 2) for x in recall_s], "bare_s": [round(x, 2) for x in bare_s],
        "cores": os.cpu_count(), "loadavg_1m": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main()
