"""Candidate memories for one query of one tenant: vector, full-text and graph diffusion, fused.

Vector search runs over ``memories.embedding`` (exact on small tables, the
ANN index ``pipelines.maintain`` builds from ``VECTOR_INDEX_MIN_ROWS`` rows),
full-text search is Lance's native BM25 index on ``memories.text``, and the
two rankings are fused by reciprocal rank fusion.
The fused scores then seed a personalised PageRank over the tenant's memory
graph (HippoRAG's diffusion step): memories are linked to the memories next to
them in their conversation and to the entities they mention (from ``entities``
and ``triples``), entities are linked to each other by triples, and the
entities named in the query are seeded too. The graph cache also holds the
tenant's memory rows (without embeddings) for recall to read candidates
from. Every search carries the scope's tenant filter; nothing here can read
across tenants. This module only reads the store: indexes are built by the
backfill and ``memtape maintain``; without the BM25 index, the graph's rows
are ranked by their terms instead.
"""
from __future__ import annotations

import dataclasses
import math
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow.compute as pc

from memtape.connectors.lance_store import Store, column_is, not_archived, search_filter
from memtape.recall.subjects import People
from memtape.recall.working import covered_ids

RRF_K = 60  # Cormack et al.'s constant: rank 1 and rank 10 differ by ~13%, so no single list dominates
CANDIDATES_PER_SEARCH = 100
VECTOR_WEIGHT = 1.0
TEXT_WEIGHT = 1.0
PPR_DAMPING = 0.3  # share of each step's mass that flows along edges; the rest returns to the seeds
PPR_STEPS = 8
DIFFUSED_CANDIDATES = 400
ENTITY_SEED_WEIGHT = 0.5  # seed mass of the query's entities relative to the retrieval seeds
NEIGHBOUR_EDGE_WEIGHT = 1.0
ENTITY_EDGE_WEIGHT = 0.5
MAX_ENTITY_DEGREE = 50  # an entity in more memories than this (a speaker, "today") says little about any one
ROW_COLUMNS = ["tenant", "memory_id", "header", "text", "participants", "subjects", "start_time", "end_time", "source_kind",
               "conversation_id", "raw_event_ids", "triple_ids", "strength", "last_recalled"]
_INDEX_LOCK = threading.Lock()
_TEXT_INDEXED: dict[tuple[str, int], bool] = {}  # (store home, memories version) -> whether text has its BM25 index
_DATASETS: dict[tuple[str, str], Any] = {}  # (store home, table) -> its Lance dataset at the latest version read
_TENANT_SHARE: dict[tuple[str, str, int], float] = {}  # (home, tenant, memories version) -> share of rows
POSTFILTER_MIN_SHARE = 0.5
_WORD = re.compile(r"[\w'’-]+")


@dataclasses.dataclass(frozen=True)
class Scope:
    """Whose memories, from when, from which kind of source, about whom: the filter every search carries.

    ``subjects`` (subject strings as the memories store them) keeps the
    memories about any of them; None keeps every memory.
    """

    tenant: str
    since: datetime | None = None
    until: datetime | None = None
    source_kind: str | None = None
    subjects: tuple[str, ...] | None = None

    def where(self) -> str:
        """The search filter for this scope (``search_filter``); archived (forgotten) memories are never candidates."""
        return search_filter(self.tenant, live_only=True, subjects=self.subjects, ends_from=self.since,
                             starts_before=self.until, source_kind=self.source_kind)

    def admits(self, row: dict) -> bool:
        """The same test as ``where`` on a row already read (archived rows are never cached)."""
        return (row["tenant"] == self.tenant
                and (self.since is None or row["end_time"] is None or row["end_time"] >= self.since)
                and (self.until is None or row["start_time"] is None or row["start_time"] < self.until)
                and (self.source_kind is None or row["source_kind"] == self.source_kind)
                and (self.subjects is None or not set(self.subjects).isdisjoint(row.get("subjects") or ())))


def has_text_index(store: Store) -> bool:
    """Whether ``memories.text`` has its BM25 index (built by the backfill and ``memtape maintain``); checked once per version."""
    table = store.table("memories")
    key = (store.home, store.version("memories"))
    with _INDEX_LOCK:
        if key not in _TEXT_INDEXED:
            if len(_TEXT_INDEXED) > 1_000:
                _TEXT_INDEXED.clear()
            _TEXT_INDEXED[key] = ("text",) in {tuple(i.columns) for i in table.list_indices()}
        return _TEXT_INDEXED[key]


def _prefilter(store: Store, scope: Scope) -> bool:
    """Filter before searching, unless the tenant holds most of the table and the scope is the whole tenant.

    Either way the results carry the scope's filter; filtering after the
    search only skips evaluating it on every row when it would keep most of them.
    """
    if scope.since or scope.until or scope.source_kind or scope.subjects is not None:
        return True
    table = store.table("memories")
    key = (store.home, scope.tenant, store.version("memories"))
    share = _TENANT_SHARE.get(key)
    if share is None:
        if len(_TENANT_SHARE) > 10_000:
            _TENANT_SHARE.clear()
        total = table.count_rows()
        share = _TENANT_SHARE[key] = store.count("memories", column_is("tenant", scope.tenant)) / total if total else 0.0
    return share < POSTFILTER_MIN_SHARE


def vector_ranking(store: Store, query_vector: np.ndarray, scope: Scope, limit: int = CANDIDATES_PER_SEARCH,
                   prefilter: bool | None = None) -> list[str]:
    """Memory ids nearest to the query embedding (cosine), best first; ``prefilter`` defaults to ``_prefilter``."""
    search = (
        store.table("memories")
        .search(query_vector, vector_column_name="embedding")
        .distance_type("cosine")
        .where(scope.where(), prefilter=_prefilter(store, scope) if prefilter is None else prefilter)
        .select(["memory_id", "_distance"])
        .limit(limit)
    )
    return search.to_arrow().column("memory_id").to_pylist()


def text_ranking(store: Store, query: str, scope: Scope, limit: int = CANDIDATES_PER_SEARCH,
                 prefilter: bool | None = None, graph: "MemoryGraph | None" = None) -> list[str]:
    """Memory ids by Lance BM25 over ``text``, best first; empty when the query has no searchable word.

    A store whose text index is not built yet (recall never builds one: it
    only reads) is ranked from ``graph``'s rows by the query terms' IDF.
    """
    if not _WORD.search(query):
        return []
    if not has_text_index(store):
        return graph.lexical_ranking(query, scope, limit) if graph is not None else []
    search = (
        store.table("memories")
        .search(query, query_type="fts", fts_columns="text")
        .where(scope.where(), prefilter=_prefilter(store, scope) if prefilter is None else prefilter)
        .select(["memory_id", "_score"])
        .limit(limit)
    )
    return search.to_arrow().column("memory_id").to_pylist()


def lookup(store: Store, table: str, where: pc.Expression, columns: list[str], limit: int) -> list[dict]:
    """Rows of ``table`` matching the expression ``where``, read straight from its Lance dataset.

    The dataset is reopened only when the table has a new version: a fresh
    one reloads its manifest and index metadata (several times the cost of the
    read), and lancedb's query path re-reads the schema on every call.
    """
    dataset = _DATASETS.get((store.home, table))
    if dataset is None or dataset.version != store.version(table):
        dataset = _DATASETS[(store.home, table)] = store.dataset(table)
    return dataset.to_table(filter=where, columns=columns, limit=limit).to_pylist()


def rrf(rankings: Sequence[Sequence[str]], weights: Sequence[float], k: int = RRF_K) -> dict[str, float]:
    """Reciprocal rank fusion: each list gives ``weight / (k + rank)`` to the ids it holds."""
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, key in enumerate(ranking, 1):
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
    return scores


@dataclasses.dataclass
class MemoryGraph:
    """A tenant's live memories (rows without embeddings) and entities, linked as one sparse matrix.

    ``strength`` holds reinforcements written since the rows were read, so
    a reinforced memory ranks by its new strength without a rebuild.
    """

    rows: Any  # pyarrow.Table of ROW_COLUMNS, one row per node below len(memory_ids)
    entity_index: dict[str, int]  # normalised entity name or alias -> node
    spread: Any  # scipy.sparse csr, (n, n): the transposed row-normalised adjacency, so rank = spread @ rank
    people: People  # whom the memories are about
    covered: set[str]  # every raw event a memory cites, archived memories included
    strength: dict[str, tuple[float, datetime]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self._terms: list[set[str]] | None = None  # match terms per row, made on the first lexical ranking
        self.rows = self.rows.combine_chunks()
        self.memory_ids = self.rows.column("memory_id").to_pylist()
        self.node_of = {mid: i for i, mid in enumerate(self.memory_ids)}

    @property
    def size(self) -> int:
        return self.spread.shape[0]

    def lexical_ranking(self, query: str, scope: Scope, limit: int) -> list[str]:
        """Memory ids whose text holds the query's terms, by the summed IDF of those terms, best first."""
        from memtape.transforms.tokens import match_terms

        if self._terms is None:
            self._terms = [match_terms(text) for text in self.rows.column("text").to_pylist()]
        wanted = match_terms(query)
        df = {w: sum(w in terms for terms in self._terms) for w in wanted}
        n = len(self._terms)
        scores = {i: sum(math.log(1 + n / df[w]) for w in terms & wanted) for i, terms in enumerate(self._terms) if terms & wanted}
        best = sorted(scores, key=lambda i: -scores[i])
        rows = self.rows_for([self.memory_ids[i] for i in best[:4 * limit]], scope)
        return [r["memory_id"] for r in rows][:limit]

    def rows_for(self, ids: Sequence[str], scope: Scope) -> list[dict]:
        """The cached rows of ``ids`` that ``scope`` admits, with reinforcements applied."""
        nodes = [self.node_of[i] for i in ids if i in self.node_of]
        out = []
        for row in self.rows.take(nodes).to_pylist() if nodes else []:
            if scope.admits(row):
                if row["memory_id"] in self.strength:
                    row["strength"], row["last_recalled"] = self.strength[row["memory_id"]]
                out.append(row)
        return out


def _memory_edges(memories: Any) -> tuple[list[int], list[int], list[float]]:
    """Each memory linked to the next one of its conversation, in time order."""
    conv = memories.column("conversation_id").to_pylist()
    start = memories.column("start_time").to_pylist()
    order = sorted(range(len(conv)), key=lambda i: (conv[i] or "", start[i].timestamp() if start[i] else 0.0))
    rows, cols, weights = [], [], []
    for a, b in zip(order, order[1:]):
        if conv[a] is not None and conv[a] == conv[b]:
            rows += [a, b]
            cols += [b, a]
            weights += [NEIGHBOUR_EDGE_WEIGHT, NEIGHBOUR_EDGE_WEIGHT]
    return rows, cols, weights


def build_graph(store: Store, tenant: str) -> MemoryGraph:
    """Read the tenant's memories, entities and triples and link them (no cross-tenant rows are read)."""
    from scipy import sparse

    from memtape.transforms.entities import normalise

    where = column_is("tenant", tenant)
    memories = store.read("memories", where=where & not_archived(), columns=ROW_COLUMNS)
    entities = store.read("entities", where=where, columns=["entity_id", "canonical_name", "aliases", "raw_event_ids"])
    triples = store.read("triples", where=where, columns=["triple_id", "subject_entity_id", "object_entity_id", "raw_event_id"])
    memory_ids = memories.column("memory_id").to_pylist()
    n_mem = len(memory_ids)
    entity_ids = entities.column("entity_id").to_pylist()
    node = {eid: n_mem + i for i, eid in enumerate(entity_ids)}
    rows, cols, weights = _memory_edges(memories)

    by_event: dict[str, list[int]] = {}
    by_triple: dict[str, int] = {}
    for i, (events, tids) in enumerate(zip(memories.column("raw_event_ids").to_pylist(), memories.column("triple_ids").to_pylist())):
        for ev in events or ():
            by_event.setdefault(ev, []).append(i)
        for tid in tids or ():
            by_triple[tid] = i
    mentions: dict[int, set[int]] = {}
    for eid, events in zip(entity_ids, entities.column("raw_event_ids").to_pylist()):
        for ev in events or ():
            mentions.setdefault(node[eid], set()).update(by_event.get(ev, ()))
    for tid, subj, obj, ev in zip(*(triples.column(c).to_pylist() for c in ("triple_id", "subject_entity_id", "object_entity_id", "raw_event_id"))):
        mems = {by_triple[tid]} if tid in by_triple else set(by_event.get(ev, ()))
        ends = [node[e] for e in (subj, obj) if e in node]
        for e in ends:
            mentions.setdefault(e, set()).update(mems)
        if len(ends) == 2 and ends[0] != ends[1]:
            rows += ends
            cols += ends[::-1]
            weights += [ENTITY_EDGE_WEIGHT, ENTITY_EDGE_WEIGHT]
    for e, mems in mentions.items():
        if len(mems) > MAX_ENTITY_DEGREE:
            continue
        for m in mems:
            rows += [e, m]
            cols += [m, e]
            weights += [ENTITY_EDGE_WEIGHT, ENTITY_EDGE_WEIGHT]

    size = n_mem + len(entity_ids)
    adjacency = sparse.csr_matrix((weights, (rows, cols)), shape=(size, size), dtype=np.float32)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    degree[degree == 0] = 1.0
    spread = sparse.diags(1.0 / degree).dot(adjacency).T.tocsr()
    names: dict[str, int] = {}
    for eid, name, aliases in zip(entity_ids, entities.column("canonical_name").to_pylist(), entities.column("aliases").to_pylist()):
        for alias in [name, *(aliases or [])]:
            key = normalise(alias)
            if key:
                names.setdefault(key, node[eid])
    people = People.build(s for subjects in memories.column("subjects").to_pylist() for s in subjects or ())
    cited = store.read("memories", where=where, columns=["raw_event_ids"]).column("raw_event_ids").to_pylist()
    return MemoryGraph(memories, names, spread, people, covered_ids(cited))


class GraphCache:
    """One built graph per (store, tenant), rebuilt when any of its tables has a new version.

    A version that only reinforced memories (written by this process right
    after the cached one) is carried over instead, so recall does not rebuild
    after each of its own writes.
    """

    def __init__(self) -> None:
        self._graphs: dict[tuple[str, str], tuple[tuple[int, ...], MemoryGraph]] = {}
        self._lock = threading.Lock()

    def get(self, store: Store, tenant: str) -> MemoryGraph:
        versions = tuple(store.version(name) for name in ("memories", "entities", "triples"))
        key = (store.home, tenant)
        with self._lock:
            hit = self._graphs.get(key)
        if hit is not None and hit[0] == versions:
            return hit[1]
        graph = build_graph(store, tenant)
        with self._lock:
            self._graphs[key] = (versions, graph)
        return graph

    def reinforced(self, store: Store, tenant: str, rows: list[dict], before: int, after: int) -> None:
        """Note strengths written as memories version ``before`` became ``after``; keep the graph if nothing else changed."""
        key = (store.home, tenant)
        with self._lock:
            hit = self._graphs.get(key)
            if hit is None or hit[0][0] != before or after != before + 1:
                return
            hit[1].strength.update({r["memory_id"]: (r["strength"], r["last_recalled"]) for r in rows})
            self._graphs[key] = ((after, *hit[0][1:]), hit[1])


GRAPHS = GraphCache()


def query_entities(graph: MemoryGraph, query: str, max_words: int = 4) -> list[int]:
    """Entity nodes whose normalised name or alias is a word n-gram of the query."""
    from memtape.transforms.entities import normalise

    if not graph.entity_index:
        return []
    tokens = _WORD.findall(query)
    found: list[int] = []
    for n in range(max_words, 0, -1):
        for i in range(len(tokens) - n + 1):
            hit = graph.entity_index.get(normalise(" ".join(tokens[i:i + n])))
            if hit is not None and hit not in found:
                found.append(hit)
    return found


def diffuse(graph: MemoryGraph, seeds: dict[str, float], entity_nodes: list[int]) -> dict[str, float]:
    """Personalised PageRank from the seed memories (and query entities): memory id -> score.

    The result keeps the seeds' own mass, so diffusion reorders and extends the
    fused ranking rather than replacing it.
    """
    index = graph.node_of
    restart = np.zeros(graph.size, dtype=np.float32)
    for mid, score in seeds.items():
        i = index.get(mid)
        if i is not None:
            restart[i] += score
    total = restart.sum()
    if entity_nodes and total > 0:
        restart[entity_nodes] += ENTITY_SEED_WEIGHT * total / len(entity_nodes)
    if restart.sum() == 0:
        return {}
    restart /= restart.sum()
    rank = restart.copy()
    for _ in range(PPR_STEPS):
        rank = (1 - PPR_DAMPING) * restart + PPR_DAMPING * graph.spread.dot(rank)
    mem = rank[: len(graph.memory_ids)]
    keep = min(DIFFUSED_CANDIDATES, len(mem))
    top = np.argpartition(-mem, keep - 1)[:keep] if keep < len(mem) else np.arange(len(mem))
    return {graph.memory_ids[i]: float(mem[i]) for i in top if mem[i] > 0}


def candidates(store: Store, query: str, embed: Callable[[str], np.ndarray], scope: Scope, use_graph: bool = True,
               graph: MemoryGraph | None = None) -> dict[str, float]:
    """Fused candidate scores for one query: RRF of vector and BM25, diffused over the memory graph.

    BM25 runs in a thread while ``embed`` encodes the query (both release
    the GIL). ``graph`` is the tenant's, when the caller already holds it.
    """
    prefilter = _prefilter(store, scope)
    graph = graph or GRAPHS.get(store, scope.tenant)
    with ThreadPoolExecutor(max_workers=1) as pool:
        text = pool.submit(text_ranking, store, query, scope, prefilter=prefilter, graph=graph)
        vector = vector_ranking(store, embed(query), scope, prefilter=prefilter)
        fused = rrf([vector, text.result()], [VECTOR_WEIGHT, TEXT_WEIGHT])
    if not use_graph or not fused:
        return fused
    diffused = diffuse(graph, fused, query_entities(graph, query))
    return diffused or fused
