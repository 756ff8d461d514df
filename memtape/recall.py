"""``recall``: the best context for a query within a token budget, with provenance, for one tenant.

Retrieval is diffusion, then convergence: ``recall_candidates`` spreads from the
query over vector, BM25 and the memory graph; this module weighs the
memories by forgetting strength, ``recall_lines`` splits the best ones into
lines traced to single raw events and scores those (questions about *when*
favour lines that state a time), and ``recall_pack`` converges on the set that
covers the query best under the budget. Each returned item carries its raw
event ids, sources and event time so an answer can cite where it came from.
Every read is scoped to one tenant; recall writes nothing except, when
forgetting is on, the strength of the memories it returned.
"""
from __future__ import annotations

import dataclasses
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from memtape.connectors.lance_store import Store
from memtape.forgetting import ForgettingPolicy, ranking_weight, reinforce
from memtape.recall_candidates import GRAPHS, Scope, candidates, ensure_indexes
from memtape.recall_lines import LINES, score_lines
from memtape.recall_pack import Packable, count_tokens, pack, render

DEFAULT_BUDGET = 1000
EXPAND_MEMORIES = 40  # the best memories whose lines compete for the budget
ROWS_READ = 2 * EXPAND_MEMORIES  # candidates forgetting weighs before the best are expanded
TIME_BOOST = 0.3  # for "when" questions, a line that states a time is worth this much more
WHEN_QUESTION = re.compile(r"^\s*(when\b|what (day|date|time|year|month|week)\b|how long\b|since when\b|which (day|year|month)\b)", re.I)
STATES_TIME = re.compile(
    r"\b(yesterday|today|tonight|tomorrow|last|next|ago|this (morning|week|month|year)|weekend|week|month|year|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|january|february|march|april|june|july|august|"
    r"september|october|november|december|(?:19|20)\d\d|\d{1,2}(?:st|nd|rd|th)|\d{1,2}[:.]\d\d|recently|since)\b",
    re.I,
)
_REINFORCER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memtape-reinforce")


def _one_torch_thread() -> None:
    """Give the calling thread one torch intra-op thread, leaving the process default as it was.

    One short query gains nothing from intra-op parallelism, while on busy
    cores every OpenMP barrier waits for a descheduled worker: encoding a
    query took 5-10x longer with two threads than with one under load.
    ``torch.set_num_threads`` also becomes the default of threads torch has not
    seen yet, so a throwaway thread puts that default back.
    """
    import torch

    default = torch.get_num_threads()  # initialises this thread from the process default first
    torch.set_num_threads(1)
    restore = threading.Thread(target=torch.set_num_threads, args=(default,))
    restore.start()
    restore.join()


# One encoder thread for the process: a fast tokenizer called from two threads at once can fail
# ("Already borrowed"), and a query encodes in milliseconds, so concurrent recalls (the service) queue here.
_ENCODER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memtape-query-encoder", initializer=_one_torch_thread)


@dataclasses.dataclass
class RecallItem:
    """One line of a memory (or a whole memory) in the context, with what an answer needs to cite it."""

    memory_id: str
    text: str
    header: str | None
    who: str | None
    event_time: datetime | None
    end_time: datetime | None
    source_kind: str | None
    conversation_id: str | None
    raw_event_ids: list[str]
    sources: list[str]
    source_ids: list[str]
    score: float


@dataclasses.dataclass
class RecallResult:
    """The packed context and its items (chronological), for one query of one tenant."""

    query: str
    tenant: str
    budget: int
    context: str
    tokens: float
    items: list[RecallItem]
    latency_ms: float

    @property
    def raw_event_ids(self) -> set[str]:
        return {e for item in self.items for e in item.raw_event_ids}

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for item in out["items"]:
            for key in ("event_time", "end_time"):
                item[key] = item[key].isoformat() if item[key] else None
        return out


def is_when_question(query: str) -> bool:
    return bool(WHEN_QUESTION.search(query))


def embed_query(query: str) -> Any:
    """The query's MiniLM embedding, made exactly as the pipeline embeds memories, on the one-thread encoder."""
    from memtape.transforms.encode import embed_texts

    return _ENCODER.submit(lambda: embed_texts([query])[0]).result()


_STORES: dict[tuple[str, tuple[tuple[str, str], ...]], Store] = {}


def default_store() -> Store:
    """The configured store (``MEMTAPE_HOME``), opened once per process so its tables and caches stay warm."""
    from memtape.config import load_config

    cfg = load_config().store
    key = (cfg.home, tuple(sorted(cfg.storage_options.items())))
    if key not in _STORES:
        _STORES[key] = Store(cfg.home, cfg.storage_options)
    return _STORES[key]


def _who(row: dict) -> str | None:
    people = [p for p in row.get("participants") or [] if p]
    return ", ".join(people) if people else None


def _reinforce(store: Store, tenant: str, memory_ids: list[str], policy: ForgettingPolicy, now: datetime) -> None:
    """Write the reinforcement, then tell the graph cache that only strengths changed."""
    before = store.table("memories").version
    rows = reinforce(store, tenant, memory_ids, policy, now)
    if rows:
        GRAPHS.reinforced(store, tenant, rows, before, store.table("memories").version)


def wait_for_reinforcement() -> None:
    """Block until reinforcements queued by earlier recalls are written (tests, benchmarks)."""
    _REINFORCER.submit(lambda: None).result()


def recall(
    query: str,
    tenant: str,
    budget: int = DEFAULT_BUDGET,
    since: datetime | None = None,
    until: datetime | None = None,
    source_kind: str | None = None,
    store: Store | None = None,
    *,
    forgetting: ForgettingPolicy | None = None,
    reinforce_recalled: bool = True,
    use_graph: bool = True,
    now: datetime | None = None,
) -> RecallResult:
    """Recall ``tenant``'s memories for ``query`` packed into ``budget`` tokens (words x 1.3).

    ``since``/``until`` keep memories overlapping that interval, ``source_kind``
    one kind of source (im, email, meeting, health). ``forgetting`` defaults to
    the policy in the environment (``MEMTAPE_FORGETTING_*``); when it applies,
    recalled memories are reinforced unless ``reinforce_recalled`` is false.
    """
    from memtape.errors import UserError

    if not tenant:
        raise UserError("recall needs a tenant: there is no search across tenants")
    if budget <= 0:
        raise UserError(f"budget must be a positive number of tokens, got {budget}")
    start = time.perf_counter()
    store = store or default_store()
    policy = forgetting if forgetting is not None else ForgettingPolicy.from_env()
    now = now or datetime.now(timezone.utc)
    scope = Scope(tenant, since, until, source_kind)
    ensure_indexes(store)  # first: building an index makes a new version, which would rebuild the graph
    graph = GRAPHS.get(store, tenant)
    scores = candidates(store, query, embed_query, scope, use_graph=use_graph, graph=graph)
    rows = graph.rows_for(sorted(scores, key=lambda k: -scores[k])[:ROWS_READ], scope)
    weighted = {row["memory_id"]: scores[row["memory_id"]] * ranking_weight(policy, row, now) for row in rows}
    rows = sorted(rows, key=lambda r: -weighted[r["memory_id"]])[:EXPAND_MEMORIES]
    lines = LINES.lines(store, tenant, rows)
    line_scores = score_lines(lines, weighted, query)
    when = is_when_question(query)
    packables = []
    for line, score in zip(lines, line_scores):
        if when and STATES_TIME.search(line.text):
            score *= 1.0 + TIME_BOOST
        packables.append(Packable(line.key, float(score), line.text, line.who, line.when, line.raw_event_ids))
    chosen = pack(packables, query, budget)
    by_id = {row["memory_id"]: row for row in rows}
    line_of = {line.key: line for line in lines}
    items = []
    for c in chosen:
        line = line_of[c.key]
        row = by_id[line.memory_id]
        items.append(RecallItem(
            row["memory_id"], c.text, row["header"], c.who, c.when, row["end_time"] if len(c.raw_event_ids) > 1 else c.when,
            row["source_kind"], row["conversation_id"], list(c.raw_event_ids), line.sources, line.source_ids, c.score,
        ))
    if reinforce_recalled and policy.enabled:
        # Written after the answer, off the caller's path; the process waits for it before exiting.
        _REINFORCER.submit(_reinforce, store, tenant, sorted({i.memory_id for i in items if policy.applies_to(i.source_kind)}), policy, now)
    context = render(chosen)
    return RecallResult(query, tenant, budget, context, count_tokens(context), items, (time.perf_counter() - start) * 1000)
