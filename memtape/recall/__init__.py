"""Recall: the read side of memory, one tenant's best verbatim context for a query under a token budget.

``from memtape.recall import recall`` is the Python API of ``memtape recall``
(the service, the MCP server and the retrievers call it too). The modules,
in the order a query meets them: ``candidates`` (vector, BM25 and graph
diffusion, fused), ``working`` (raw events no memory cites yet), ``lines``
(memories cut into lines traced to one raw event each), ``subjects`` (whom
a query is about), ``pack`` (the budget), and ``api`` (``recall()`` itself).
Recall only reads: the indexes it searches are built by the pipeline and
``memtape maintain``; its one write is the forgetting strength of what it returned.
"""
from memtape.recall.api import DEFAULT_BUDGET, RecallItem, RecallResult, recall, wait_for_reinforcement

__all__ = ["DEFAULT_BUDGET", "RecallItem", "RecallResult", "recall", "wait_for_reinforcement"]
