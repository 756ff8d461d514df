"""Backfill throughput and Beam/Lance overhead on a text mix, against the same stages run standalone and a bare parse.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_backfill.py [--mix all|irc-enron] [--messages N]
       [--repeats 3] [--runner DirectRunner] [--workers N] [--data ../shared/data]

The ``all`` mix is the LoCoMo dev turns (converted at run time to a temporary JSONL in
the jsonl connector's format, ids prefixed by conversation; never copied into
the repo), the shared IRC logs and the Enron Maildir; ``irc-enron`` leaves
LoCoMo out. ``--messages`` caps each source (default: all of them). The
backfill runs with its default options (every core) unless ``--workers`` says
otherwise. Once per run the bare parse is timed: the packaged
``en_core_web_sm`` with every component on, ``nlp.pipe`` in this one process,
over the text of every raw event once; ``parse_ratio`` is the backfill's
median wall over it (issue 23's target: <= 0.5). Each repeat runs (a) the whole
backfill in this process through ``run_backfill``, the function ``memtape
backfill`` calls, into a fresh temporary store, and (b) each stage standalone
on the same data, without Beam and without Lance, each fed the previous
stage's real output in ``BuildMemories`` order: connector parsing, dedupe,
segmentation (with the configured surprise predictor, MiniLM by default),
compression, triples (of the kept sentences), embedding. Models (spaCy, MiniLM, the
static vectors) are loaded once before timing, on both sides; with
``--workers`` > 1 the direct runner's worker processes load their own, inside
the pipeline's time. Prints a table on stderr and one JSON line on stdout:
median seconds per stage, their sum, the pipeline's median wall time, the
median per-repeat overhead ratio (wall / sum of stages, target <= 1.25), the
same ratio in CPU seconds of this process (steadier on a shared machine; it
misses worker processes when the backfill uses more than one), the
standalone stages' CPU-second split, messages/s (raw_events rows landed /
median wall, target >= 300) and the parse ratio.
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
from memtape.transforms.segment_episodes import (
    MINILM, ConversationAssembler, configured_surprise, conversation_key, surprise_models, with_sentence_vectors,
)
from memtape.pipelines.runner import DEFAULT_RUNNER
from memtape.schemas.records import RawEvent, memory_pieces, utcnow
from memtape.transforms.compress import build_memory
from memtape.transforms.dedupe import Deduper
from memtape.transforms.encode import embed_texts, forget_vectors, memory_text
from memtape.transforms.entities import EntityResolver
from memtape.transforms.models import DEFAULT_SPACY_MODEL, embedder, spacy_model
from memtape.transforms.static_embed import static_embeddings
from memtape.transforms.transcribe import needs_transcription
from memtape.transforms.triples import MAX_EPISODES_PER_BATCH, NLP_BATCH_SIZE, NLP_DISABLE, episode_triples, parse_texts

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TENANT = "bench"
TARGET_MESSAGES_PER_S = 300.0
TARGET_OVERHEAD = 1.25
TARGET_PARSE_RATIO = 0.5


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


MIXES = ("all", "irc-enron")


def text_mix(data: Path, work: Path, cap: int | None, mix: str = "all") -> list[str]:
    uris = [f"jsonl:{locomo_jsonl(data / 'locomo' / 'locomo_dev.json', work / 'locomo.jsonl', cap)}"] if mix == "all" else []
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
    """Each conversation's assembler, with the configured surprise predictor, fed its kept and dropped units, then
    closed where idle now, as a backfill does; MiniLM vectors of every kept unit in one call, as the pipeline
    encodes a batch of units across conversations (uncached here: every repeat encodes them again)."""
    kept, dropped = units
    surprise = configured_surprise()
    embeddings, predictor = surprise_models(surprise)
    if surprise == MINILM:
        kept = with_sentence_vectors(kept, lambda texts: embed_texts(texts, embedder(), exact=True))
    grouped: dict[str, tuple[list[dict], list[dict]]] = defaultdict(lambda: ([], []))
    for side, rows in enumerate((kept, dropped)):
        for u in rows:
            grouped[conversation_key(u)][side].append(u)
    now, bundles = utcnow(), []
    for key in sorted(grouped):
        assembler = ConversationAssembler(embeddings, predictor=predictor)
        bundles += assembler.feed(*grouped[key]) + assembler.close_idle(now)
        assembler.state_json()  # the pipeline carries every conversation's state out too
    return bundles


def compress(bundles: list[dict]) -> list[tuple[dict, dict]]:
    """(memory, the bundle with the spans its memory kept) per episode, as ``CompressEpisodes`` emits them."""
    out = []
    for bundle in bundles:
        memory, _summary, spans = build_memory(bundle)
        out.append((memory, {**bundle, "spans": spans}))
    return out


def triples(compressed: list[tuple[dict, dict]]) -> list[dict]:
    """Memories with their triples' ids; one ``nlp.pipe`` per batch of episodes over the kept spans, as ``ExtractTriples``."""
    nlp, resolver, out = spacy_model(DEFAULT_SPACY_MODEL, disable=NLP_DISABLE), EntityResolver(TENANT), []
    for start in range(0, len(compressed), MAX_EPISODES_PER_BATCH):
        batch = compressed[start:start + MAX_EPISODES_PER_BATCH]
        texts = [parse_texts(bundle) for _, bundle in batch]
        parsed = iter(nlp.pipe((t for ts in texts for t in ts), batch_size=NLP_BATCH_SIZE))
        for (memory, bundle), bundle_texts in zip(batch, texts):
            rows = episode_triples(bundle, [next(parsed) for _ in bundle_texts], resolver)
            out.append({**memory, "triple_ids": [t["triple_id"] for t in rows]})
        resolver.rows(touched_only=True)
    return out


def embed(memories: list[dict]) -> Any:
    """The memory vectors and the per-piece vectors, as ``EmbedMemories`` encodes them."""
    model = embedder()
    return embed_texts([memory_text(m) for m in memories] + [p for m in memories for p in memory_pieces(m["text"])], model)


STAGES: list[tuple[str, Callable[[Any], Any]]] = [
    ("parse", parse), ("dedupe", dedupe), ("segment", segment), ("compress", compress), ("triples", triples), ("embed", embed)]


def load_models() -> None:
    """Load and first-run every model the stages share per process, so neither side pays for it."""
    spacy_model(DEFAULT_SPACY_MODEL, disable=NLP_DISABLE)("Warm up the parser.")
    embed_texts(["Warm up the embedder."])
    static_embeddings()


def clocks() -> tuple[float, float]:
    """(wall, CPU of this process) seconds: on a shared machine CPU time is the steadier of the two."""
    return time.perf_counter(), time.process_time()


def bare_parse(uris: list[str]) -> float:
    """Seconds one process needs to parse the text of every raw event once with the whole spaCy pipeline."""
    texts = [r["text"] for r in parse(uris) if r.get("text") and not needs_transcription(r)]
    nlp = spacy_model(DEFAULT_SPACY_MODEL)
    nlp("Warm up the whole pipeline.")
    start = time.perf_counter()
    for _ in nlp.pipe(texts, batch_size=NLP_BATCH_SIZE):
        pass
    return time.perf_counter() - start


def standalone(uris: list[str]) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """Wall and CPU seconds per stage, and the rows the stages made."""
    seconds, cpu, counts, value = {}, {}, {}, uris
    for name, stage in STAGES:
        wall0, cpu0 = clocks()
        value = stage(value)
        seconds[name] = time.perf_counter() - wall0
        cpu[name] = time.process_time() - cpu0
        if name == "parse":
            counts["raw_events"] = len(value)
        elif name == "triples":
            counts.update(episodes=len(value), memories=len(value), triples=sum(len(m["triple_ids"]) for m in value))
    return seconds, cpu, counts


def pipeline(uris: list[str], runner: str, workers: int | None) -> tuple[float, float, dict[str, int]]:
    """Wall and CPU seconds (this process only) and rows landed of one backfill into a fresh store."""
    options = {} if workers is None else {"workers": workers}
    forget_vectors()  # vectors an earlier repeat encoded in this process must not make this one cheaper
    with tempfile.TemporaryDirectory(prefix="bench-home-") as home:
        wall0, cpu0 = clocks()
        result = run_backfill(uris, TENANT, Store(home), runner=runner, **options)
        return time.perf_counter() - wall0, time.process_time() - cpu0, result.landed


# ---------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?")
    return {"cores": os.cpu_count(), "cpu_model": model, "loadavg_1m": os.getloadavg()[0]}


def table(report: dict[str, Any]) -> str:
    lines = [f"{'stage':<28}{'seconds':>10}{'CPU share':>11}"]
    lines += [f"{name:<28}{s:>10.2f}{report['stages_cpu_share'][name]:>10.0%}" for name, s in report["stages_s"].items()]
    lines += [f"{'sum of stages':<28}{report['stages_sum_s']:>10.2f}",
              f"{'pipeline wall':<28}{report['pipeline_wall_s']:>10.2f}",
              f"{'overhead (wall / sum)':<28}{report['overhead_ratio']:>10.2f}   target <= {TARGET_OVERHEAD}",
              f"{'overhead in CPU seconds':<28}{report['overhead_ratio_cpu']:>10.2f}",
              f"{'messages/s':<28}{report['messages_per_s']:>10.1f}   target >= {TARGET_MESSAGES_PER_S:.0f}",
              f"{'bare spaCy parse':<28}{report['bare_parse_s']:>10.2f}",
              f"{'parse ratio (wall / parse)':<28}{report['parse_ratio']:>10.2f}   target <= {TARGET_PARSE_RATIO}",
              f"{report['messages']} messages ({report['mix']}), median of {report['repeats']}, {report['runner']} x{report['workers']}, "
              f"{report['machine']['cores']} cores ({report['machine']['cpu_model']}), load {report['machine']['loadavg_1m']:.1f}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--mix", choices=MIXES, default="all", help="all: LoCoMo dev + IRC + Enron; irc-enron: the last two")
    parser.add_argument("--messages", type=int, default=None, help="cap per source (default: all of each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runner", default=DEFAULT_RUNNER)
    parser.add_argument("--workers", type=int, default=None, help="backfill worker processes (default: the backfill's own)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    load_models()
    model_load_s = time.perf_counter() - start
    walls, stage_runs, cpu_runs, ratios, cpu_ratios = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-mix-") as work:
        uris = text_mix(args.data, Path(work), args.messages, args.mix)
        parse_s = bare_parse(uris)
        for _ in range(args.repeats):
            wall, pipeline_cpu, landed = pipeline(uris, args.runner, args.workers)
            seconds, stages_cpu, counts = standalone(uris)
            walls.append(wall)
            stage_runs.append(seconds)
            cpu_runs.append(stages_cpu)
            ratios.append(wall / sum(seconds.values()))
            cpu_ratios.append(pipeline_cpu / sum(stages_cpu.values()))
    stages = {name: statistics.median(run[name] for run in stage_runs) for name, _ in STAGES}
    stages_cpu = {name: statistics.median(run[name] for run in cpu_runs) for name, _ in STAGES}
    wall = statistics.median(walls)
    messages = landed.get("raw_events", 0)
    report = {
        "benchmark": "backfill", "mix": args.mix, "messages": messages, "repeats": args.repeats, "runner": args.runner,
        "workers": args.workers or "default", "cap_per_source": args.messages, "stages_s": {k: round(v, 3) for k, v in stages.items()},
        "stages_cpu_s": {k: round(v, 3) for k, v in stages_cpu.items()},
        "stages_cpu_share": {k: round(v / sum(stages_cpu.values()), 3) for k, v in stages_cpu.items()},
        "stages_sum_s": round(sum(stages.values()), 3), "pipeline_wall_s": round(wall, 3),
        "overhead_ratio": round(statistics.median(ratios), 3), "overhead_ratio_cpu": round(statistics.median(cpu_ratios), 3),
        "messages_per_s": round(messages / wall, 1), "bare_parse_s": round(parse_s, 3), "parse_ratio": round(wall / parse_s, 3),
        "meets": {"messages_per_s": messages / wall >= TARGET_MESSAGES_PER_S,
                  "overhead_ratio": statistics.median(ratios) <= TARGET_OVERHEAD,
                  "parse_ratio": wall / parse_s <= TARGET_PARSE_RATIO},
        "pipeline_landed": landed, "standalone_rows": counts, "model_load_s": round(model_load_s, 2), "machine": machine(),
    }
    print(table(report), file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
