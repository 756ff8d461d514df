"""Checkpoints and the state carried between runs, kept in the ``pipeline_state`` table.

A run reads its checkpoint (generation g and a progress payload: a watermark
or Kafka offsets), loads the newest state rows of generation <= g, computes,
lands derived rows and new state rows at generation g' > g, and only then
commits the checkpoint at g' in one single-row write. A crash anywhere before
that commit leaves the old checkpoint in force: the next run first deletes the
dead run's state rows (generations above g), then loads the same state,
derives the same rows with the same ids, and lands nothing twice.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import operator
import time
from typing import Any, Collection

import apache_beam as beam
import pyarrow.compute as pc

from memtape.connectors.beam_io import ReadFromLance
from memtape.connectors.lance_store import Store, any_of, column_is
from memtape.pipelines.memory import SEGMENTER_STATE
from memtape.schemas.records import StateRow, stable_id, utcnow

CHECKPOINT = "checkpoint"


@dataclasses.dataclass
class Checkpoint:
    name: str
    tenant: str
    generation: int = 0
    progress: dict[str, Any] = dataclasses.field(default_factory=dict)


def next_generation(previous: int) -> int:
    """A generation above every earlier one: wall-clock nanoseconds, bumped if the clock stood still."""
    return max(time.time_ns(), previous + 1)


def load_checkpoint(store: Store, tenant: str, name: str) -> Checkpoint:
    rows = store.read("pipeline_state", where=column_is("state_id", stable_id(tenant, CHECKPOINT, name))).to_pylist()
    if not rows:
        return Checkpoint(name, tenant)
    return Checkpoint(name, tenant, rows[0]["generation"], json.loads(rows[0]["payload"]))


def commit_checkpoint(store: Store, checkpoint: Checkpoint) -> None:
    """The one write that makes a run's landed rows and state the new starting point."""
    row = StateRow(tenant=checkpoint.tenant, state_id=stable_id(checkpoint.tenant, CHECKPOINT, checkpoint.name),
                   kind=CHECKPOINT, scope=checkpoint.name, checkpoint=checkpoint.name, generation=checkpoint.generation,
                   payload=json.dumps(checkpoint.progress, default=str), updated_time=utcnow())
    store.upsert("pipeline_state", [dict(row)])


def carried_where(checkpoints: list[Checkpoint], scopes: Collection[str] | None = None) -> pc.Expression | None:
    """The filter for the state rows a run starts from: each checkpoint's rows up to its committed generation,
    of ``scopes`` only when given; None when there is nothing to read.

    State rows may belong to any tenant: a stream checkpoint covers a Kafka
    partition, which carries many tenants' conversations.
    """
    committed = [column_is("checkpoint", c.name) & (pc.field("generation") <= c.generation) for c in checkpoints if c.generation]
    if not committed or (scopes is not None and not scopes):
        return None
    where = (pc.field("kind") != CHECKPOINT) & functools.reduce(operator.or_, committed)
    return where if scopes is None else where & any_of("scope", sorted(scopes))


def _newest(a: tuple[int, str], b: tuple[int, str]) -> tuple[int, str]:
    return a if a[0] >= b[0] else b


class ReadCarriedState(beam.PTransform):
    """The newest state row per (kind, scope) under ``where`` (see ``carried_where``), as ``(kind, scope, payload)``.

    The state travels as data through the pipeline, so a run's cost follows the
    state it touches and nothing large is pickled into its DoFns.
    """

    def __init__(self, store: Store, where: pc.Expression | None) -> None:
        super().__init__()
        self.home, self.storage_options, self.where = store.home, store.storage_options, where

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        if self.where is None:
            return pbegin | "NoState" >> beam.Create([])
        return (
            pbegin
            | "StateRows" >> ReadFromLance("pipeline_state", self.home, self.storage_options, self.where)
            | "ByKindAndScope" >> beam.Map(lambda r: ((r["kind"], r["scope"]), (r["generation"], r["payload"])))
            | "Newest" >> beam.CombinePerKey(lambda values: functools.reduce(_newest, values, (-1, "")))
            | "AsTriples" >> beam.MapTuple(lambda kind_scope, newest: (*kind_scope, newest[1]))
        )


def carried_conversations(store: Store, checkpoint: Checkpoint) -> dict[str, str]:
    """The newest committed segmenter state per conversation key of one checkpoint, read here in the driver."""
    where = carried_where([checkpoint])
    if where is None:
        return {}
    rows = store.read("pipeline_state", where=where & column_is("kind", SEGMENTER_STATE), columns=["scope", "generation", "payload"])
    newest: dict[str, tuple[int, str]] = {}
    for scope, gen, payload in zip(*(rows.column(c).to_pylist() for c in ("scope", "generation", "payload"))):
        newest[scope] = _newest(newest.get(scope, (-1, "")), (gen, payload))
    return {scope: payload for scope, (_, payload) in newest.items()}


def prune_states(store: Store, checkpoint: Checkpoint) -> int:
    """Delete state rows superseded by a committed newer generation, and uncommitted leftovers above it.

    Run it on the committed checkpoint before a run that follows a crash: the
    new run's generation is higher than a dead run's, so once committed it
    would otherwise make that run's state rows count for the scopes it does not
    rewrite.
    """
    where = column_is("checkpoint", checkpoint.name) & (pc.field("kind") != CHECKPOINT)
    rows = store.read("pipeline_state", where=where, columns=["state_id", "kind", "scope", "generation"])
    if rows.num_rows == 0:
        return 0
    keep: dict[tuple[str, str], tuple[int, str]] = {}
    for sid, kind, scope, gen in zip(*(rows.column(c).to_pylist() for c in ("state_id", "kind", "scope", "generation"))):
        if gen <= checkpoint.generation and ((kind, scope) not in keep or gen > keep[(kind, scope)][0]):
            keep[(kind, scope)] = (gen, sid)
    kept_ids = {sid for _, sid in keep.values()}
    doomed = [sid for sid in rows.column("state_id").to_pylist() if sid not in kept_ids]
    if doomed:
        store.delete("pipeline_state", any_of("state_id", doomed))
    return len(doomed)
