"""``recall()``: the best context for a query within a token budget, with provenance, for one tenant.

Retrieval is diffusion, then convergence: ``candidates`` spreads from the
query over vector, BM25 and the memory graph; this module weighs the
memories by forgetting strength, ``lines`` splits the best ones into
lines traced to single raw events and scores those (questions about *when*
favour lines that state a time), and ``pack`` converges on the set that
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

import numpy as np

from memtape.connectors.lance_store import Store
from memtape.forgetting import ForgettingPolicy, ranking_weight, reinforce
from memtape.recall.candidates import GRAPHS, Scope, candidates
from memtape.recall.lines import LINES, score_lines
from memtape.recall.pack import Packable, arrange, count_tokens, pack, render
from memtape.recall.working import WORKING, working_row

DEFAULT_BUDGET = 1000
EXPAND_MEMORIES = 40  # the best memories whose lines compete for the budget
ROWS_READ = 2 * EXPAND_MEMORIES  # candidates forgetting weighs before the best are expanded
TIME_BOOST = 0.3  # for "when" questions, a line that states a time is worth this much more
RELEVANCE_FLOOR = 0.3  # an item must clear the typical candidate by this share of the best's lead over it ...
TYPICAL_SHARE = 0.5  # ... the typical candidate being this share of the median (both chosen on the dev sets: BENCHMARKS.md)
LATEST_BOOST = 0.5  # the newest reading of the series a "latest" question asks about ranks this far above the best
SERIES_MATCH = 0.999  # a line belongs to the asked series when it matches the query's terms as well as the best line
OLDER_READING_SHARE = 0.3  # older readings of that series keep this share of their score
HISTORY_READINGS = 3  # a "latest" answer keeps the readings of this many earlier times of that series as history
HISTORY_STEP = 0.05  # each earlier of those times ranks this share of the best lower, so the history reads newest first
ORDERS = ("relevance", "time")
LATEST_QUESTION = re.compile(r"\b(latest|most recent(ly)?|current(ly)?|newest|last (reading|value|result|measurement|visit|dose))\b", re.I)
SERIES_QUESTION = re.compile(r"\b(over time|history|histories|trend|trends|progression|"
                             r"all (the |of )?(readings|values|results|measurements))\b", re.I)
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

    memory_id: str | None  # None for working memory: landed, not yet in a closed episode
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
    subjects: list[str]  # whom its memory is about


@dataclasses.dataclass
class RecallResult:
    """The packed context and its items (in ``order``), for one query of one tenant; ``reason`` says why it is empty."""

    query: str
    tenant: str
    budget: int
    context: str
    tokens: float
    items: list[RecallItem]
    latency_ms: float
    order: str = "relevance"
    subjects: list[str] = dataclasses.field(default_factory=list)  # whom recall was restricted to
    reason: str | None = None

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
    """A future of the query's MiniLM embedding, made exactly as the pipeline embeds memories, on the one-thread encoder."""
    from memtape.transforms.encode import embed_texts

    return _ENCODER.submit(lambda: embed_texts([query])[0])


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


def _validated(query: str, tenant: str, budget: int, order: str, max_items: int | None) -> None:
    from memtape.errors import UserError

    if not query or not query.strip():
        raise UserError("recall needs a query: an empty question has no answer to look for")
    if not tenant:
        raise UserError("recall needs a tenant: there is no search across tenants")
    if budget <= 0:
        raise UserError(f"budget must be a positive number of tokens, got {budget}")
    if order not in ORDERS:
        raise UserError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    if max_items is not None and max_items <= 0:
        raise UserError(f"max_items must be a positive number, got {max_items}")


def _about(graph: Any, query: str, subject: str | None, tenant: str) -> tuple[tuple[str, ...] | None, frozenset[str]]:
    """(subject strings recall is restricted to, or None; the query words that name them)."""
    from memtape.errors import UserError
    from memtape.transforms.tokens import match_terms

    people = graph.people
    if subject is not None:
        found = people.resolve(subject)
        if not found:
            known = ", ".join(sorted(people.display(p) for p in range(len(people.subjects_of)))[:5])
            raise UserError(f"tenant {tenant!r} has no memories about {subject!r}" + (f" (people include: {known})" if known else ""))
    else:
        found = people.named_in(query)
        if len(found) != 1:  # nobody named, or a question about several people: every memory may answer
            return None, frozenset()
    subjects = people.subjects(found)
    return subjects, frozenset(w for s in subjects for w in match_terms(s.replace("<", " ").replace(">", " ").replace("/", " ")))


def _series_boost(lines: list[Any], scores: Any, lexical: Any, latest: bool) -> Any:
    """For questions about the latest value or a history: the series the question names, and little else.

    Readings of one kind share their words and differ in values and time, so
    the lines that match the query's terms best form the series asked about.
    A "latest" question gets its newest readings first (all those of the
    newest time: a report and its result share it), then those of the
    ``HISTORY_READINGS`` times before as a short history, and the older ones
    fall back; a history question gets every reading. Lines outside the
    series (another indicator of the same visit) keep the share of the
    query's terms they match: "body weight" keeps little of a body height,
    "weight and height" keeps both.
    """
    if not len(lines) or lexical.max() <= 0:
        return scores
    series = [i for i in range(len(lines)) if lexical[i] >= SERIES_MATCH * lexical.max() and lines[i].when is not None]
    if not series:
        return scores
    scores = np.asarray(scores, dtype=np.float32)
    top = float(scores.max())
    out = scores * (lexical / lexical.max())
    if latest:
        times = sorted({lines[i].when for i in series}, reverse=True)
        out[series] = scores[series] * OLDER_READING_SHARE
        for k, when in enumerate(times[1:1 + HISTORY_READINGS]):  # each earlier time a little lower: newest first
            out[[i for i in series if lines[i].when == when]] = top * (1.0 - HISTORY_STEP * k)
        out[[i for i in series if lines[i].when == times[0]]] = top * (1.0 + LATEST_BOOST)
    else:
        out[series] = np.maximum(scores[series], top)
    return out


def relevance_floor(scores: list[float]) -> float:
    """The score an item needs: the typical candidate's, raised by ``RELEVANCE_FLOOR`` of the best's lead over it.

    A share of the best alone lets everything through where every candidate
    is somewhat relevant (all the lines of one patient's record, a strong
    conversation's small talk): lines that merely resemble the rest fill the
    budget. Measured from the typical candidate (``TYPICAL_SHARE`` of the
    pool's median), an item has to stand out from the pool it competes in.
    """
    if not scores:
        return 0.0
    typical = TYPICAL_SHARE * float(np.median(scores))
    return typical + RELEVANCE_FLOOR * (max(scores) - typical)


def recall(
    query: str,
    tenant: str,
    budget: int = DEFAULT_BUDGET,
    since: datetime | None = None,
    until: datetime | None = None,
    source_kind: str | None = None,
    store: Store | None = None,
    *,
    subject: str | None = None,
    max_items: int | None = None,
    min_score: float | None = None,
    order: str = "relevance",
    forgetting: ForgettingPolicy | None = None,
    reinforce_recalled: bool = True,
    use_graph: bool = True,
    now: datetime | None = None,
) -> RecallResult:
    """Recall ``tenant``'s memories for ``query``: at most ``budget`` tokens (words x 1.3), fewer when fewer are relevant.

    ``since``/``until`` keep memories overlapping that interval, ``source_kind``
    one kind of source (im, email, meeting, health), ``subject`` the memories
    about one person (a name, address or id); without it, a query that names
    one person who has memories of their own is restricted to them. Items
    scoring under ``min_score`` are left out, by default those that do not
    stand out from the pool (``relevance_floor``); ``max_items`` caps their number. ``order`` is ``relevance``
    (best first, a memory's items together in time order) or ``time``; a
    question about a history or trend is answered in time order, one about
    the latest value prefers the newest matching record. ``forgetting``
    defaults to the policy in the environment (``MEMTAPE_FORGETTING_*``); when
    it applies, recalled memories are reinforced unless ``reinforce_recalled``
    is false.
    """
    _validated(query, tenant, budget, order, max_items)
    start = time.perf_counter()
    store = store or default_store()
    policy = forgetting if forgetting is not None else ForgettingPolicy.from_env()
    now = now or datetime.now(timezone.utc)
    graph = GRAPHS.get(store, tenant)
    about, name_words = _about(graph, query, subject, tenant)
    scope = Scope(tenant, since, until, source_kind, about)
    encoding = embed_query(query)  # encodes while the full-text search runs
    scores = candidates(store, query, lambda _query: encoding.result(), scope, use_graph=use_graph, graph=graph)
    query_vector = encoding.result()
    rows = graph.rows_for(sorted(scores, key=lambda k: -scores[k])[:ROWS_READ], scope)
    weighted = {row["memory_id"]: scores[row["memory_id"]] * ranking_weight(policy, row, now) for row in rows}
    rows = sorted(rows, key=lambda r: -weighted[r["memory_id"]])[:EXPAND_MEMORIES]
    lines = LINES.lines(store, tenant, rows)
    fresh = WORKING.lines(store, tenant, graph.covered, query, scope.admits)
    top = max(weighted.values(), default=1.0)
    weighted.update({line.memory_id: top for line in fresh})  # as relevant a priori as the best memory
    lines += fresh
    line_scores, lexical = score_lines(lines, weighted, query, name_words, query_vector)
    if is_when_question(query):
        line_scores = line_scores * [1.0 + TIME_BOOST if STATES_TIME.search(line.text) else 1.0 for line in lines]
    if LATEST_QUESTION.search(query):
        line_scores = _series_boost(lines, line_scores, lexical, latest=True)
    elif SERIES_QUESTION.search(query):
        line_scores = _series_boost(lines, line_scores, lexical, latest=False)
        order = "time"
    packables = [Packable(line.key, float(score), line.text, line.who, line.when, line.raw_event_ids)
                 for line, score in zip(lines, line_scores)]
    floor = relevance_floor([p.score for p in packables]) if min_score is None else min_score
    chosen = pack([p for p in packables if p.score >= floor and p.score > 0], query, budget, max_items)
    by_id = {row["memory_id"]: row for row in rows} | {line.memory_id: working_row(line) for line in fresh}
    line_of = {line.key: line for line in lines}
    chosen = arrange(chosen, {c.key: line_of[c.key].memory_id for c in chosen}, order)
    while chosen and count_tokens(render(chosen)) > budget:  # day lines repeat when relevance order revisits a day
        chosen.remove(min(chosen, key=lambda c: c.score))
    items = []
    for c in chosen:
        line = line_of[c.key]
        row = by_id[line.memory_id]
        items.append(RecallItem(
            row["memory_id"], c.text, row["header"], c.who, c.when, row["end_time"] if len(c.raw_event_ids) > 1 else c.when,
            row["source_kind"], row["conversation_id"], list(c.raw_event_ids), line.sources, line.source_ids, c.score,
            list(row.get("subjects") or []),
        ))
    if reinforce_recalled and policy.enabled:
        # Written after the answer, off the caller's path; the process waits for it before exiting.
        reinforced = sorted({i.memory_id for i in items if i.memory_id and policy.applies_to(i.source_kind)})
        _REINFORCER.submit(_reinforce, store, tenant, reinforced, policy, now)
    context = render(chosen)
    reason = None if items else _why_empty(graph, scope, bool(packables))
    return RecallResult(query, tenant, budget, context, count_tokens(context), items, (time.perf_counter() - start) * 1000,
                        order, list(about or []), reason)


def _why_empty(graph: Any, scope: Scope, had_candidates: bool) -> str:
    if not graph.memory_ids:
        return f"tenant {scope.tenant!r} has no memories yet"
    if had_candidates:
        return "no memory scored above the relevance floor for this query"
    return "no memory matches the filters (time, source kind, subject)"
