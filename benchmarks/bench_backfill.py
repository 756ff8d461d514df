"""Backfill throughput and Beam/Lance overhead on a text mix, against the same stages run standalone.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_backfill.py [--messages N] [--repeats 3]
       [--runner DirectRunner] [--workers 1] [--data ../shared/data]

The mix is the LoCoMo dev turns (converted at run time to a temporary JSONL in
the jsonl connector's format, ids prefixed by conversation; never copied into
the repo), the shared IRC logs and the Enron Maildir; ``--messages`` caps each
of the three sources (default: all of them). Each repeat runs (a) the whole
backfill in this process through ``run_backfill``, the function ``memtape
backfill`` calls, into a fresh temporary store, and (b) each stage standalone
on the same data, without Beam and without Lance, each fed the previous
stage's real output in ``BuildMemories`` order: connector parsing, dedupe,
segmentation, triples, compression, embedding. Models (spaCy, MiniLM, the
static vectors) are loaded once before timing, on both sides; with
``--workers`` > 1 the direct runner's worker processes load their own, inside
the pipeline's time. Prints a table on stderr and one JSON line on stdout:
median seconds per stage, their sum, the pipeline's median wall time, the
median per-repeat overhead ratio (wall / sum of stages, target <= 1.25), the
same ratio in CPU seconds of this process (steadier on a shared machine; it
misses worker processes when ``--workers`` > 1) and messages/s (raw_events
rows landed / median wall, target >= 300).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from memtape.connectors.base import read_source
from memtape.connectors.lance_store import Store
from memtape.connectors.sources._common import input_files
from memtape.evals.recall import load_locomo
from memtape.pipelines.backfill import run_backfill
from memtape.transforms.segment_episodes import ConversationAssembler, conversation_key
from memtape.pipelines.runner import DEFAULT_RUNNER
from memtape.schemas.records import RawEvent, utcnow
from memtape.transforms.compress import build_memory
from memtape.transforms.dedupe import Deduper
from memtape.transforms.encode import embed_texts, memory_text
from memtape.transforms.entities import EntityResolver
from memtape.transforms.models import DEFAULT_SPACY_MODEL, embedder, spacy_model
from memtape.transforms.static_embed import static_embeddings
from memtape.transforms.transcribe import needs_transcription
from memtape.transforms.triples import MAX_EPISODES_PER_BATCH, NLP_BATCH_SIZE, NLP_DISABLE, _needs_parse, episode_triples

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TENANT = "bench"
TARGET_MESSAGES_PER_S = 300.0
TARGET_OVERHEAD = 1.25


# ---------------------------------------------------------------- the text mix


def locomo_jsonl(path: Path, out: Path, cap: int | None) -> Path:
    """LoCoMo turns as jsonl-connector lines; dialogue ids repeat across conversations, so they get its id."""
    turns = [{**t, "id": f"{c.sample_id}:{t['id']}"} for c in load_locomo(path) for t in c.turns][:cap]
    out.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in turns), encoding="utf-8")
    return out


def irc_logs(folder: Path, out: Path, cap: int | None) -> list[Path]:
    """The ``.ascii.txt`` logs (the folder also holds annotation files), each cut to its share of ``cap``."""
    logs = sorted(folder.glob("*.ascii.txt"))
    if cap is None:
        return logs
    out.mkdir()
    share = math.ceil(cap / len(logs))
    for log in logs:  # the file name carries the log's date, so the copy keeps it
        lines = log.read_text(encoding="utf-8", errors="surrogateescape").splitlines(keepends=True)[:share]
        (out / log.name).write_text("".join(lines), encoding="utf-8", errors="surrogateescape")
    return [out / log.name for log in logs]


def maildir(folder: Path, out: Path, cap: int | None) -> Path:
    """The Maildir, or a copy of its first ``cap`` messages in the connector's order."""
    if cap is None:
        return folder
    for file in input_files(str(folder))[:cap]:
        target = out / file.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target)
    return out


def text_mix(data: Path, work: Path, cap: int | None) -> list[str]:
    uris = [f"jsonl:{locomo_jsonl(data / 'locomo' / 'locomo_dev.json', work / 'locomo.jsonl', cap)}"]
    uris += [f"irc:{p}" for p in irc_logs(data / "im" / "irc", work / "irc", cap)]
    uris.append(f"maildir:{maildir(data / 'email' / 'skilling-j', work / 'maildir', cap)}")
    return uris


# ---------------------------------------------------------------- stages standalone, in BuildMemories order


def parse(uris: list[str]) -> list[dict]:
    return [r.to_row() for uri in uris for r in read_source(uri, TENANT) if isinstance(r, RawEvent)]


def dedupe(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """One tenant is one dedupe scope, so one ``Deduper`` over every text unit is what the pipeline runs."""
    units = [r for r in rows if not needs_transcription(r) and r.get("text")]
    results = list(Deduper().process_batch(units))
    return [k for k, _ in results if k is not None], [d for _, d in results if d is not None]


def segment(units: tuple[list[dict], list[dict]]) -> list[dict]:
    """Each conversation's assembler fed its kept and dropped units, then closed where idle now, as a backfill does."""
    kept, dropped = units
    grouped: dict[str, tuple[list[dict], list[dict]]] = defaultdict(lambda: ([], []))
    for side, rows in enumerate((kept, dropped)):
        for u in rows:
            grouped[conversation_key(u)][side].append(u)
    now, bundles = utcnow(), []
    for key in sorted(grouped):
        assembler = ConversationAssembler(static_embeddings())
        bundles += assembler.feed(*grouped[key]) + assembler.close_idle(now)
        assembler.state_json()  # the pipeline carries every conversation's state out too
    return bundles


def triples(bundles: list[dict]) -> list[dict]:
    """Bundles with their triples attached; one ``nlp.pipe`` per batch of episodes, as ``ExtractTriples`` batches."""
    nlp, resolver, out = spacy_model(DEFAULT_SPACY_MODEL, disable=NLP_DISABLE), EntityResolver(TENANT), []
    for start in range(0, len(bundles), MAX_EPISODES_PER_BATCH):
        batch = bundles[start:start + MAX_EPISODES_PER_BATCH]
        parsed = iter(nlp.pipe([u["text"] for b in batch for u in b["units"] if _needs_parse(u)], batch_size=NLP_BATCH_SIZE))
        for bundle in batch:
            docs = [next(parsed) if _needs_parse(u) else None for u in bundle["units"]]
            out.append({**bundle, "triples": episode_triples(bundle, docs, resolver)})
        resolver.rows(touched_only=True)
    return out


def compress(bundles: list[dict]) -> list[dict]:
    return [build_memory(b)[0] for b in bundles]


def embed(memories: list[dict]) -> Any:
    return embed_texts([memory_text(m) for m in memories], embedder())


STAGES: list[tuple[str, Callable[[Any], Any]]] = [
    ("parse", parse), ("dedupe", dedupe), ("segment", segment), ("triples", triples), ("compress", compress), ("embed", embed)]


def load_models() -> None:
    """Load and first-run every model the stages share per process, so neither side pays for it."""
    spacy_model(DEFAULT_SPACY_MODEL, disable=NLP_DISABLE)("Warm up the parser.")
    embed_texts(["Warm up the embedder."])
    static_embeddings()


def clocks() -> tuple[float, float]:
    """(wall, CPU of this process) seconds: on a shared machine CPU time is the steadier of the two."""
    return time.perf_counter(), time.process_time()


def standalone(uris: list[str]) -> tuple[dict[str, float], float, dict[str, int]]:
    """Wall seconds per stage, CPU seconds of all stages, and the rows the stages made."""
    seconds, counts, value = {}, {}, uris
    cpu = 0.0
    for name, stage in STAGES:
        wall0, cpu0 = clocks()
        value = stage(value)
        seconds[name] = time.perf_counter() - wall0
        cpu += time.process_time() - cpu0
        if name == "parse":
            counts["raw_events"] = len(value)
        elif name == "triples":
            counts.update(episodes=len(value), triples=sum(len(b["triples"]) for b in value))
        elif name == "compress":
            counts["memories"] = len(value)
    return seconds, cpu, counts


def pipeline(uris: list[str], runner: str, workers: int) -> tuple[float, float, dict[str, int]]:
    """Wall and CPU seconds (this process only) and rows landed of one backfill into a fresh store."""
    with tempfile.TemporaryDirectory(prefix="bench-home-") as home:
        wall0, cpu0 = clocks()
        result = run_backfill(uris, TENANT, Store(home), runner=runner, workers=workers)
        return time.perf_counter() - wall0, time.process_time() - cpu0, result.landed


# ---------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?")
    return {"cores": os.cpu_count(), "cpu_model": model, "loadavg_1m": os.getloadavg()[0]}


def table(report: dict[str, Any]) -> str:
    lines = [f"{'stage':<28}{'seconds':>10}"]
    lines += [f"{name:<28}{s:>10.2f}" for name, s in report["stages_s"].items()]
    lines += [f"{'sum of stages':<28}{report['stages_sum_s']:>10.2f}",
              f"{'pipeline wall':<28}{report['pipeline_wall_s']:>10.2f}",
              f"{'overhead (wall / sum)':<28}{report['overhead_ratio']:>10.2f}   target <= {TARGET_OVERHEAD}",
              f"{'overhead in CPU seconds':<28}{report['overhead_ratio_cpu']:>10.2f}",
              f"{'messages/s':<28}{report['messages_per_s']:>10.1f}   target >= {TARGET_MESSAGES_PER_S:.0f}",
              f"{report['messages']} messages, median of {report['repeats']}, {report['runner']} x{report['workers']}, "
              f"{report['machine']['cores']} cores ({report['machine']['cpu_model']}), load {report['machine']['loadavg_1m']:.1f}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--messages", type=int, default=None, help="cap per source (default: all of each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runner", default=DEFAULT_RUNNER)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    load_models()
    model_load_s = time.perf_counter() - start
    walls, stage_runs, ratios, cpu_ratios = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-mix-") as work:
        uris = text_mix(args.data, Path(work), args.messages)
        for _ in range(args.repeats):
            wall, pipeline_cpu, landed = pipeline(uris, args.runner, args.workers)
            seconds, stages_cpu, counts = standalone(uris)
            walls.append(wall)
            stage_runs.append(seconds)
            ratios.append(wall / sum(seconds.values()))
            cpu_ratios.append(pipeline_cpu / stages_cpu)
    stages = {name: statistics.median(run[name] for run in stage_runs) for name, _ in STAGES}
    wall = statistics.median(walls)
    messages = landed.get("raw_events", 0)
    report = {
        "benchmark": "backfill", "messages": messages, "repeats": args.repeats, "runner": args.runner, "workers": args.workers,
        "cap_per_source": args.messages, "stages_s": {k: round(v, 3) for k, v in stages.items()},
        "stages_sum_s": round(sum(stages.values()), 3), "pipeline_wall_s": round(wall, 3),
        "overhead_ratio": round(statistics.median(ratios), 3), "overhead_ratio_cpu": round(statistics.median(cpu_ratios), 3),
        "messages_per_s": round(messages / wall, 1),
        "meets": {"messages_per_s": messages / wall >= TARGET_MESSAGES_PER_S,
                  "overhead_ratio": statistics.median(ratios) <= TARGET_OVERHEAD},
        "pipeline_landed": landed, "standalone_rows": counts, "model_load_s": round(model_load_s, 2), "machine": machine(),
    }
    print(table(report), file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
