"""``memtape eval recall``: evidence recall of packed contexts on LoCoMo, against four turn-level baselines.

Each LoCoMo conversation is backfilled as its own tenant through the JSON
Lines connector (IM path), with the session date-time as every turn's event
time (plus one second per turn, to keep order) and the ``dia_id`` as the
source id, so evidence maps to ``raw_events.event_id`` through provenance.
Every question with evidence is asked; evidence recall is the share of
evidence turns whose raw event is among the returned items' provenance.
The baselines rank raw turns (BM25 over ``raw_events.text`` with Lance's FTS,
MiniLM over the rendered turn, or both by RRF with k = 60) or 10-turn windows
(MiniLM), rendered ``[day] speaker: text`` and packed greedily in rank order
under the same budget and the same token count (words x 1.3). The store is a
temporary folder unless ``--home`` names one. This module only evaluates.
"""
from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import click

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
SESSION_TIME_FORMAT = "%I:%M %p on %d %B, %Y"
TENANT_PREFIX = "locomo-"
RRF_K = 60
WINDOW_TURNS = 10
BASELINE_DEPTH = 200  # ranks taken from each baseline list before packing
_EVIDENCE_ID = re.compile(r"D\d+:\d+")


@dataclasses.dataclass
class Question:
    text: str
    category: int
    evidence: list[str]
    answer: str | None = None  # None for the adversarial questions, which have no answer in the conversation


@dataclasses.dataclass
class Conversation:
    sample_id: str
    turns: list[dict]  # jsonl connector lines: id, time, sender, conversation, text
    questions: list[Question]

    @property
    def tenant(self) -> str:
        return TENANT_PREFIX + self.sample_id


def _session_time(value: str) -> datetime:
    return datetime.strptime(value.strip(), SESSION_TIME_FORMAT).replace(tzinfo=timezone.utc)


def load_locomo(path: Path) -> list[Conversation]:
    """LoCoMo conversations as connector lines and questions; evidence ids are split and cleaned."""
    from memtape.errors import UserError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        out = []
        for sample in data:
            conv = sample["conversation"]
            turns = []
            n = 1
            while f"session_{n}" in conv:
                start = _session_time(conv[f"session_{n}_date_time"])
                for i, turn in enumerate(conv[f"session_{n}"]):
                    turns.append({"id": turn["dia_id"], "time": (start + timedelta(seconds=i)).isoformat(),
                                  "sender": turn["speaker"], "conversation": sample["sample_id"], "text": turn["text"]})
                n += 1
            questions = [Question(q["question"], int(q["category"]), _EVIDENCE_ID.findall(" ".join(map(str, q.get("evidence", [])))),
                                  str(q["answer"]) if q.get("answer") is not None and int(q["category"]) != 5 else None)
                         for q in sample["qa"]]
            out.append(Conversation(str(sample["sample_id"]), turns, questions))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a LoCoMo file ({type(exc).__name__}: {exc})") from exc
    return out


def backfill(conv: Conversation, store: Any, workdir: Path) -> None:
    """Land one conversation's turns as raw events of its own tenant, through the real backfill."""
    from memtape.pipelines.backfill import run_backfill

    source = workdir / f"{conv.sample_id}.jsonl"
    source.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in conv.turns), encoding="utf-8")
    run_backfill([f"jsonl:{source}"], conv.tenant, store, close_open=True)


def raw_texts(store: Any, tenant: str, items: Sequence[Any]) -> dict[str, str]:
    """The raw text of every event the items cite (one tenant's)."""
    from memtape.connectors.lance_store import any_of, column_is

    ids = sorted({e for item in items for e in item.raw_event_ids})
    if not ids:
        return {}
    rows = store.read("raw_events", where=column_is("tenant", tenant) & any_of("event_id", ids),
                      columns=["event_id", "text"]).to_pylist()
    return {r["event_id"]: r["text"] or "" for r in rows}


def _plain(text: str) -> str:
    return " ".join(text.split()).casefold()


def verbatim(item: Any, texts: dict[str, str]) -> bool:
    """Whether the item's text, whitespace and case aside, stands in the raw text of an event it cites."""
    mine = _plain(item.text)
    return bool(mine) and any(mine in _plain(texts.get(e, "")) for e in item.raw_event_ids)


def answer_in(answer: str, context: str) -> bool:
    """Whether every content word of a gold answer appears among the context's words."""
    from memtape.transforms.tokens import content_words

    wanted = content_words(answer)
    return bool(wanted) and wanted <= content_words(context)


# --- baselines -------------------------------------------------------------

@dataclasses.dataclass
class Unit:
    event_ids: list[str]
    text: str  # rendered: one "[day] speaker: text" line per turn


def _render_turn(row: dict) -> str:
    from memtape.recall.pack import DAY_FORMAT

    day = row["event_time"].strftime(DAY_FORMAT) if row["event_time"] else ""
    return f"[{day}] {row['sender']}: {row['text']}"


def greedy_pack(ranking: Iterable[int], units: Sequence[Unit], budget: float) -> tuple[set[str], float]:
    """Units in rank order while they fit (a unit too long is skipped): (event ids, tokens used)."""
    from memtape.recall.pack import count_tokens

    used, got = 0.0, set()
    for i in ranking:
        cost = count_tokens(units[i].text)
        if used + cost <= budget:
            used += cost
            got.update(units[i].event_ids)
    return got, used


def _rrf(rankings: Sequence[Sequence[int]]) -> list[int]:
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, i in enumerate(ranking, 1):
            scores[i] = scores.get(i, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores, key=lambda i: -scores[i])


class Baselines:
    """The four baselines over one tenant's raw turns; ``answer`` returns each one's (event ids, tokens)."""

    def __init__(self, store: Any, tenant: str) -> None:
        import numpy as np

        from memtape.connectors.lance_store import column_is, search_filter
        from memtape.transforms.models import embedder

        self.store, self.where = store, search_filter(tenant)
        rows = store.read("raw_events", where=column_is("tenant", tenant), columns=["event_id", "sender", "event_time", "text"]).to_pylist()
        rows.sort(key=lambda r: r["event_time"])
        self.turns = [Unit([r["event_id"]], _render_turn(r)) for r in rows]
        self.index = {r["event_id"]: i for i, r in enumerate(rows)}
        self.windows = [Unit([u.event_ids[0] for u in self.turns[i:i + WINDOW_TURNS]],
                             "\n".join(u.text for u in self.turns[i:i + WINDOW_TURNS])) for i in range(0, len(rows), WINDOW_TURNS)]
        model = embedder()
        self.encode = lambda texts: model.encode(texts, normalize_embeddings=True, batch_size=64, show_progress_bar=False)
        self.turn_vectors = self.encode([u.text for u in self.turns])
        self.window_vectors = self.encode([u.text for u in self.windows])
        self.np = np

    def _bm25(self, question: str) -> list[int]:
        hits = (self.store.table("raw_events").search(question, query_type="fts", fts_columns="text")
                .where(self.where, prefilter=True).select(["event_id", "_score"]).limit(BASELINE_DEPTH).to_arrow())
        return [self.index[e] for e in hits.column("event_id").to_pylist() if e in self.index]

    def _dense(self, vectors: Any, query_vector: Any) -> list[int]:
        return [int(i) for i in self.np.argsort(-(vectors @ query_vector))[:BASELINE_DEPTH]]

    def answer(self, question: str, budget: float) -> dict[str, tuple[set[str], float]]:
        qv = self.encode([question])[0]
        bm25, dense = self._bm25(question), self._dense(self.turn_vectors, qv)
        return {
            "bm25_turns": greedy_pack(bm25, self.turns, budget),
            "dense_turns": greedy_pack(dense, self.turns, budget),
            "hybrid_turns": greedy_pack(_rrf([bm25, dense]), self.turns, budget),
            "fixed10_windows": greedy_pack(self._dense(self.window_vectors, qv), self.windows, budget),
        }


def ensure_raw_text_index(store: Any) -> None:
    """The BM25 index the bm25/hybrid baselines search (on the evaluation's own store)."""
    from lancedb.index import FTS

    table = store.table("raw_events")
    if ("text",) not in {tuple(i.columns) for i in table.list_indices()}:
        table.create_index("text", config=FTS(), replace=True)


# --- scoring ---------------------------------------------------------------

class Tally:
    """Evidence hits per category, context tokens and latencies of one system."""

    def __init__(self) -> None:
        self.hits: dict[int, list[int]] = {}
        self.tokens: list[float] = []
        self.latencies: list[float] = []

    def add(self, category: int, evidence: set[str], got: set[str], tokens: float, latency_ms: float | None = None) -> None:
        cell = self.hits.setdefault(category, [0, 0])
        cell[0] += len(evidence & got)
        cell[1] += len(evidence)
        self.tokens.append(tokens)
        if latency_ms is not None:
            self.latencies.append(latency_ms)

    def summary(self) -> dict[str, Any]:
        import numpy as np

        hit = sum(h for h, _ in self.hits.values())
        total = sum(t for _, t in self.hits.values())
        out = {
            "evidence_recall": round(hit / total, 4) if total else None,
            "by_category": {CATEGORIES.get(c, str(c)): round(h / t, 4) for c, (h, t) in sorted(self.hits.items()) if t},
            "mean_context_tokens": round(float(np.mean(self.tokens)), 1) if self.tokens else 0.0,
            "evidence_turns": total,
        }
        if self.latencies:
            out["p95_latency_ms"] = round(float(np.percentile(self.latencies, 95)), 1)
        return out


def evaluate(path: Path, budget: int, home: str | None = None, limit: int | None = None,
             progress: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """Backfill every conversation, ask every question with evidence, and score recall and the baselines."""
    from memtape.connectors.lance_store import Store, column_is
    from memtape.forgetting import OFF
    from memtape.recall import recall

    conversations = load_locomo(path)[:limit]
    with tempfile.TemporaryDirectory(prefix="memtape-eval-recall-") as tmp:
        store = Store(home or str(Path(tmp) / "store"))
        mine = Tally()
        baselines: dict[str, Tally] = {}
        questions = answerable = answered = items = faithful = 0
        for conv in conversations:
            where = column_is("tenant", conv.tenant)
            if home is None or store.count("memories", where) == 0:  # a --home already holding it is asked again as it is
                progress(f"{conv.sample_id}: backfill")
                backfill(conv, store, Path(tmp))
            ensure_raw_text_index(store)
            events = store.read("raw_events", where=where, columns=["event_id", "source_id"])
            event_of = dict(zip(events.column("source_id").to_pylist(), events.column("event_id").to_pylist()))
            base = Baselines(store, conv.tenant)
            progress(f"{conv.sample_id}: {len(conv.questions)} questions")
            for q in conv.questions:
                evidence = {event_of[d] for d in q.evidence if d in event_of}
                if not evidence:
                    continue
                questions += 1
                result = recall(q.text, conv.tenant, budget, store=store, forgetting=OFF, reinforce_recalled=False)
                mine.add(q.category, evidence, result.raw_event_ids, result.tokens, result.latency_ms)
                texts = raw_texts(store, conv.tenant, result.items)
                items += len(result.items)
                faithful += sum(verbatim(item, texts) for item in result.items)
                if q.answer is not None:
                    answerable += 1
                    answered += answer_in(q.answer, result.context)
                for name, (got, tokens) in base.answer(q.text, budget).items():
                    baselines.setdefault(name, Tally()).add(q.category, evidence, got, tokens)
    return {
        "budget": budget,
        **{k: v for k, v in mine.summary().items() if k != "p95_latency_ms"},
        "p95_latency_ms": mine.summary().get("p95_latency_ms"),
        "verbatim_share": round(faithful / items, 4) if items else None,
        "answer_recall": round(answered / answerable, 4) if answerable else None,
        "items_per_question": round(items / questions, 2) if questions else 0.0,
        "baselines": {name: tally.summary() for name, tally in baselines.items()},
        "questions": questions,
        "conversations": len(conversations),
        "token_count": "words x 1.3",
    }


@click.command()
@click.option("--locomo", "locomo", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="A LoCoMo JSON file (a list of conversations with qa): evidence recall against four baselines.")
@click.option("--fhir", "fhir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="A folder of FHIR bundles, one patient each: latest readings, medications and conditions per patient.")
@click.option("--budget", type=click.IntRange(min=1), default=1000, show_default=True, help="Context tokens (words x 1.3).")
@click.option("--home", default=None, help="Store to backfill into [default: a temporary folder, removed after]; "
              "a LoCoMo conversation it already holds is not backfilled again.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N conversations (LoCoMo).")
@click.option("--format", "fmt", type=click.Choice(["json", "text"]), default="json", show_default=True)
def command(locomo: Path | None, fhir: Path | None, budget: int, home: str | None, limit: int | None, fmt: str) -> None:
    """Backfill a gold set, recall every question, and score what the contexts hold (one of --locomo or --fhir)."""
    from memtape.errors import UserError

    if (locomo is None) == (fhir is None):
        raise UserError("name one gold set: --locomo FILE or --fhir DIR")
    progress = lambda m: click.echo(m, err=True)  # noqa: E731
    if fhir is not None:
        from memtape.evals._recall_fhir import evaluate as evaluate_fhir

        if not fhir.is_dir():
            raise UserError(f"{fhir}: no such folder")
        report = evaluate_fhir(fhir, budget, home, progress=progress)
        if fmt == "json":
            click.echo(json.dumps(report, indent=2))
            return
        click.echo(f"budget {budget}: subject_precision {report['subject_precision']} latest.hit {report['latest']['hit']} "
                   f"latest.value_shown {report['latest']['value_shown']} meds {report['meds']['coverage']} "
                   f"conds {report['conds']['coverage']} verbatim {report['verbatim_share']} mean_tokens {report['mean_tokens']} "
                   f"on-topic token share: latest {report['latest']['asked_code_token_share']} "
                   f"meds {report['meds']['on_topic_token_share']} conds {report['conds']['on_topic_token_share']}")
        return
    assert locomo is not None
    if not locomo.is_file():
        raise UserError(f"{locomo}: no such file")
    report = evaluate(locomo, budget, home, limit, progress=progress)
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"budget {budget}: evidence_recall {report['evidence_recall']} verbatim {report['verbatim_share']} "
               f"answer_recall {report['answer_recall']} p95 {report['p95_latency_ms']} ms")
    for name, summary in report["baselines"].items():
        click.echo(f"  {name}: {summary['evidence_recall']}")
