"""Checkpoints and the state carried between runs, kept in the ``pipeline_state`` table.

A run reads its checkpoint (generation g and a progress payload: a watermark
or Kafka offsets), loads the newest state rows of generation <= g, computes,
lands derived rows and new state rows at generation g' > g, and only then
commits the checkpoint at g' in one single-row write. A crash anywhere before
that commit leaves the old checkpoint in force: the replay loads the same
state, derives the same rows with the same ids, and lands nothing twice.
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from memtape.connectors.lance_store import Store
from memtape.pipelines.memory import DEDUPE_STATE, SEGMENTER_STATE, CarriedState
from memtape.schemas.records import stable_id, utcnow

CHECKPOINT = "checkpoint"


@dataclasses.dataclass
class Checkpoint:
    name: str
    tenant: str
    generation: int = 0
    progress: dict[str, Any] = dataclasses.field(default_factory=dict)


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def next_generation(previous: int) -> int:
    """A generation above every earlier one: wall-clock nanoseconds, bumped if the clock stood still."""
    return max(time.time_ns(), previous + 1)


def load_checkpoint(store: Store, tenant: str, name: str) -> Checkpoint:
    rows = store.read("pipeline_state", where=f"state_id = {_q(stable_id(tenant, CHECKPOINT, name))}").to_pylist()
    if not rows:
        return Checkpoint(name, tenant)
    return Checkpoint(name, tenant, rows[0]["generation"], json.loads(rows[0]["payload"]))


def commit_checkpoint(store: Store, checkpoint: Checkpoint) -> None:
    """The one write that makes a run's landed rows and state the new starting point."""
    store.upsert("pipeline_state", [{
        "tenant": checkpoint.tenant, "state_id": stable_id(checkpoint.tenant, CHECKPOINT, checkpoint.name),
        "kind": CHECKPOINT, "scope": checkpoint.name, "checkpoint": checkpoint.name,
        "generation": checkpoint.generation, "payload": json.dumps(checkpoint.progress, default=str),
        "updated_time": utcnow()}])


def load_carried(store: Store, checkpoints: list[Checkpoint]) -> CarriedState:
    """The newest committed state per scope of these checkpoints (nothing newer than each one's generation).

    State rows may belong to any tenant: a stream checkpoint covers a Kafka
    partition, which carries many tenants' conversations.
    """
    newest: dict[tuple[str, str], tuple[int, str]] = {}
    owner: dict[str, str] = {}
    for checkpoint in checkpoints:
        where = (f"checkpoint = {_q(checkpoint.name)} AND kind != {_q(CHECKPOINT)} "
                 f"AND generation <= {checkpoint.generation}")
        rows = store.read("pipeline_state", where=where, columns=["kind", "scope", "generation", "payload"])
        for kind, scope, gen, payload in zip(*(rows.column(c).to_pylist() for c in ("kind", "scope", "generation", "payload"))):
            if (kind, scope) not in newest or gen > newest[(kind, scope)][0]:
                newest[(kind, scope)] = (gen, payload)
                owner[scope] = checkpoint.name
    return CarriedState(
        dedupe={scope: p for (kind, scope), (_, p) in newest.items() if kind == DEDUPE_STATE},
        conversations={scope: p for (kind, scope), (_, p) in newest.items() if kind == SEGMENTER_STATE},
        checkpoint_of=owner,
    )


def prune_states(store: Store, checkpoint: Checkpoint) -> int:
    """Delete state rows superseded by a committed newer generation, and uncommitted leftovers above it."""
    where = f"checkpoint = {_q(checkpoint.name)} AND kind != {_q(CHECKPOINT)}"
    rows = store.read("pipeline_state", where=where, columns=["state_id", "kind", "scope", "generation"])
    if rows.num_rows == 0:
        return 0
    keep: dict[tuple[str, str], tuple[int, str]] = {}
    for sid, kind, scope, gen in zip(*(rows.column(c).to_pylist() for c in ("state_id", "kind", "scope", "generation"))):
        if gen <= checkpoint.generation and ((kind, scope) not in keep or gen > keep[(kind, scope)][0]):
            keep[(kind, scope)] = (gen, sid)
    kept_ids = {sid for _, sid in keep.values()}
    doomed = [sid for sid in rows.column("state_id").to_pylist() if sid not in kept_ids]
    for start in range(0, len(doomed), 500):
        store.delete("pipeline_state", "state_id IN (" + ", ".join(_q(s) for s in doomed[start:start + 500]) + ")")
    return len(doomed)
