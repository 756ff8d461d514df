"""A retriever for RAG frameworks: memtape recall as LangChain documents or LlamaIndex nodes.

``MemtapeRetriever`` needs neither framework: ``retrieve`` returns plain
``(text, metadata)`` pairs. ``as_langchain()`` and ``as_llamaindex()`` wrap it
in the framework's own retriever class, importing the framework only then,
so memtape has no hard dependency on either. Each document is one recalled
memory with its who/when header and its provenance (raw event ids, sources,
event time) as metadata. The retriever only reads: a missing store or a
tenant with no data is an error naming the known tenants, not an empty list.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from memtape.connectors.lance_store import Store
from memtape.recall import DEFAULT_BUDGET, recall


@dataclasses.dataclass
class MemtapeRetriever:
    """Recall for one tenant with fixed filters; the budget bounds the documents' total tokens."""

    tenant: str
    budget: int = DEFAULT_BUDGET
    store: Store | None = None  # default: the configured store (MEMTAPE_HOME), opened on first use
    since: datetime | None = None
    until: datetime | None = None
    source_kind: str | None = None
    subject: str | None = None  # only memories about this person (a name, address or id)
    max_items: int | None = None
    min_score: float | None = None
    order: str = "relevance"

    def retrieve(self, query: str) -> list[tuple[str, dict[str, Any]]]:
        """(text, metadata) per recalled item, in ``order``."""
        if self.store is None:
            self.store = Store.open(create=False)
        self.store.require_tenant(self.tenant)
        result = recall(query, self.tenant, self.budget, self.since, self.until, self.source_kind, store=self.store,
                        subject=self.subject, max_items=self.max_items, min_score=self.min_score, order=self.order)
        out = []
        for item in result.items:
            when = item.event_time.isoformat() if item.event_time else None
            text = f"[{when or 'undated'}] {item.who}: {item.text}" if item.who else f"[{when or 'undated'}] {item.text}"
            out.append((text, {"memory_id": item.memory_id, "tenant": self.tenant, "event_time": when,
                               "source_kind": item.source_kind, "sources": item.sources, "source_ids": item.source_ids,
                               "raw_event_ids": item.raw_event_ids, "header": item.header, "score": item.score,
                               "subjects": item.subjects}))
        return out

    def as_langchain(self) -> Any:
        """A ``langchain_core`` BaseRetriever over this retriever (needs ``langchain-core`` installed)."""
        from langchain_core.callbacks import CallbackManagerForRetrieverRun
        from langchain_core.documents import Document
        from langchain_core.retrievers import BaseRetriever

        inner = self

        class _LangChainRetriever(BaseRetriever):
            def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
                return [Document(page_content=text, metadata=meta) for text, meta in inner.retrieve(query)]

        return _LangChainRetriever()

    def as_llamaindex(self) -> Any:
        """A ``llama_index.core`` BaseRetriever over this retriever (needs ``llama-index-core`` installed)."""
        from llama_index.core.retrievers import BaseRetriever
        from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

        inner = self

        class _LlamaIndexRetriever(BaseRetriever):
            def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
                return [NodeWithScore(node=TextNode(text=text, metadata=meta), score=meta["score"])
                        for text, meta in inner.retrieve(query_bundle.query_str)]

        return _LlamaIndexRetriever()
