"""Model stages on an accelerator against the CPU, in the same run: MiniLM embeddings and causal-LM surprise.

Usage:
  python benchmarks/bench_models.py [--device auto] [--repeats 3]      texts from ../shared/data
  python benchmarks/bench_models.py --export DIR                       texts, reference vectors, float16 MiniLM to DIR
  python benchmarks/bench_models.py --from DIR [--device cuda]         on a machine without the data or the packages

Embeddings: memory texts (header and text, as the pipeline embeds them) of
LoCoMo dev sessions and Enron thread windows, encoded by the embedder the
pipeline uses on the device (float16 on a GPU), by float32 on the same device,
and by float32 on the CPU. It reports texts/s (median of the repeats), the
ratio to the CPU, and how far each embedding lies from the CPU's float32 one
of the packaged model (1 - cosine; ``--export`` writes those reference vectors).

Surprise: ``CausalLMSurprise`` with a GPT-2-small-shaped model (12 layers,
768 wide, the MiniLM word-piece vocabulary) of random weights, since no
pretrained causal LM installs from PyPI here and the speed depends on shape,
not weights. Each LoCoMo turn is scored after its conversation's previous
turns, on the device and on the CPU; it reports turns/s and the largest
difference between the two scores of a turn.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from memtape.transforms.encode import CPU_BATCH_SIZE, GPU_BATCH_SIZE, embed_texts
from memtape.transforms.models import DEFAULT_EMBEDDING_MODEL, embedding_model_path, embedder, pick_device
from memtape.transforms.surprise import CausalLMSurprise, Unit, random_gpt2

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CPU_EMBED_TEXTS = 256  # the CPU baseline encodes this many texts (the device encodes them all)
CPU_SURPRISE_TURNS = 100
DEVICE_SURPRISE_TURNS = 1000
SURPRISE_CONTEXT_TURNS = 16  # the open episode a turn is scored after: its conversation's previous turns
EMBED_BATCH_SIZES = (CPU_BATCH_SIZE, GPU_BATCH_SIZE)  # the pipeline encodes in the first on a CPU, the second on a GPU


def shared_texts() -> tuple[list[str], list[tuple[str, str]]]:
    """(memory texts, (conversation, turn text) in order) from LoCoMo dev and the Enron Maildir."""
    from memtape.evals.compression import compress_episodes, locomo_runs, maildir_rows, thread_windows
    from memtape.transforms.compress import DEFAULT_BUDGET_RATIO
    from memtape.transforms.encode import memory_text

    rows, episodes, _ = locomo_runs(SHARED / "locomo" / "locomo_dev.json")
    mail = maildir_rows(SHARED / "email" / "skilling-j", "bench")
    memories = compress_episodes(rows, episodes, DEFAULT_BUDGET_RATIO)[0] + compress_episodes(mail, thread_windows(mail), DEFAULT_BUDGET_RATIO)[0]
    return [memory_text(m) for m in memories], [(r["conversation_id"], r["text"]) for r in rows if r.get("text")]


def export(folder: Path) -> None:
    """Write what a bare machine needs: the texts, CPU float32 reference vectors, and MiniLM saved as float16."""
    from sentence_transformers import SentenceTransformer

    memories, turns = shared_texts()
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "texts.jsonl").open("w") as out:
        for text in memories:
            out.write(json.dumps({"kind": "memory", "text": text}) + "\n")
        for conversation, text in turns:
            out.write(json.dumps({"kind": "turn", "conversation": conversation, "text": text}) + "\n")
    np.save(folder / "reference.npy", embed_texts(memories[:CPU_EMBED_TEXTS], embedder(device="cpu")))
    # Half the size, for a copy that must travel; the reference above is the packaged float32 model's.
    SentenceTransformer(embedding_model_path(DEFAULT_EMBEDDING_MODEL), device="cpu").half().save(str(folder / "minilm-fp16"))
    print(json.dumps({"exported": str(folder), "memories": len(memories), "turns": len(turns)}))


def load_texts(folder: Path) -> tuple[list[str], list[tuple[str, str]]]:
    lines = [json.loads(line) for line in (folder / "texts.jsonl").read_text().splitlines()]
    return [x["text"] for x in lines if x["kind"] == "memory"], [(x["conversation"], x["text"]) for x in lines if x["kind"] == "turn"]


def _median_rate(items: int, run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    run()  # warm-up: kernels, allocator, thread pools
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
    return round(items / statistics.median(seconds), 1), result


def _distance(vectors: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    n = min(len(vectors), len(reference))
    cosine = np.sum(vectors[:n] * reference[:n], axis=1)  # both unit length
    return {"mean_1_minus_cos": float(np.mean(1 - cosine)), "max_1_minus_cos": float(np.max(1 - cosine))}


def bench_embeddings(texts: list[str], model_path: str, device: str, repeats: int, reference: np.ndarray | None) -> dict:
    from sentence_transformers import SentenceTransformer

    cpu_model = SentenceTransformer(model_path, device="cpu").float()
    cpu_texts = texts[:CPU_EMBED_TEXTS]
    rate, cpu_vectors = _median_rate(len(cpu_texts), lambda: embed_texts(cpu_texts, cpu_model), repeats)
    reference = cpu_vectors if reference is None else reference
    out: dict[str, Any] = {"texts": len(texts), "cpu_float32": {"texts_per_s": rate, **_distance(cpu_vectors, reference)}}
    if device == "cpu":
        return out
    models = {"pipeline": embedder(model_path, device), "float32": SentenceTransformer(model_path, device=device).float()}
    for name, model in models.items():
        for batch in EMBED_BATCH_SIZES:
            rate, vectors = _median_rate(len(texts), lambda model=model, batch=batch: embed_texts(texts, model, batch), repeats)
            out[f"{device}_{name}_batch{batch}"] = {"dtype": str(next(model.parameters()).dtype), "texts_per_s": rate,
                                                   "vs_cpu": round(rate / out["cpu_float32"]["texts_per_s"], 1), **_distance(vectors, reference)}
    return out


def _score_turns(lm: CausalLMSurprise, turns: list[tuple[str, str]]) -> list[float]:
    scores, context = [], []
    for i, (conversation, text) in enumerate(turns):
        if i and turns[i - 1][0] != conversation:
            context = []
        unit = Unit(str(i), text, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
        scores.append(lm.surprise(unit, context[-SURPRISE_CONTEXT_TURNS:]))
        context.append(unit)
    return scores


def bench_surprise(turns: list[tuple[str, str]], tokenizer_dir: str, device: str, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(random_gpt2(Path(tmp), Path(tokenizer_dir) / "tokenizer.json"))
        cpu_lm, cpu_turns = CausalLMSurprise(model_dir, "cpu"), turns[:CPU_SURPRISE_TURNS]
        rate, cpu_scores = _median_rate(len(cpu_turns), lambda: _score_turns(cpu_lm, cpu_turns), 1)
        out: dict[str, Any] = {"model": "gpt2-small shape, random weights", "cpu": {"turns_per_s": rate, "turns": len(cpu_turns)}}
        if device == "cpu":
            return out
        lm = CausalLMSurprise(model_dir, device)
        device_turns = turns[:DEVICE_SURPRISE_TURNS]
        rate, scores = _median_rate(len(device_turns), lambda: _score_turns(lm, device_turns), repeats)
        out[device] = {"turns_per_s": rate, "turns": len(device_turns), "vs_cpu": round(rate / out["cpu"]["turns_per_s"], 1),
                       "max_abs_diff_vs_cpu": float(np.max(np.abs(np.subtract(scores[: len(cpu_scores)], cpu_scores))))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (default: cuda when torch sees a GPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--export", type=Path, metavar="DIR", help="write texts, reference vectors and a float16 MiniLM to DIR, then exit")
    parser.add_argument("--from", dest="source", type=Path, metavar="DIR", help="read what --export wrote instead of ../shared/data")
    args = parser.parse_args()
    if args.export:
        export(args.export)
        return
    import torch

    device = pick_device(args.device)
    if args.source:
        memories, turns = load_texts(args.source)
        model_path, reference = str(args.source / "minilm-fp16"), np.load(args.source / "reference.npy")
    else:
        (memories, turns), model_path, reference = shared_texts(), embedding_model_path(DEFAULT_EMBEDDING_MODEL), None
    report = {"device": device, "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None, "cpu_threads": torch.get_num_threads(),
              "embeddings": bench_embeddings(memories, model_path, device, args.repeats, reference),
              "surprise": bench_surprise(turns, model_path, device, args.repeats)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
