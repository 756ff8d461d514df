"""Forgetting as MemoryBank (Zhong et al., 2024) describes it: strength, Ebbinghaus decay, reinforcement.

A memory's retention is ``exp(-t / S)``: ``t`` is the time since it was last
recalled (or since it happened, if never recalled) in ``unit_days``, and ``S``
its strength, which starts at 1 and grows by ``reinforcement`` each time recall
returns it. Retention weighs the memory's ranking (never below ``floor``, so a
weak memory sinks rather than vanishes), and ``forget`` archives memories whose
retention fell below a threshold: archived rows leave the recall index but keep
their raw events and every derived row. Health records are exempt by default.
This module writes only the ``strength``, ``last_recalled`` and ``archived``
columns of ``memories``.
"""
from __future__ import annotations

import dataclasses
import math
import os
from datetime import datetime, timezone
from typing import Iterable, Mapping

import pyarrow.compute as pc

from memtape.connectors.lance_store import Store, any_of, column_is, not_archived

INITIAL_STRENGTH = 1.0
SECONDS_PER_DAY = 86_400.0


@dataclasses.dataclass(frozen=True)
class ForgettingPolicy:
    """How fast memories fade and what never fades; ``from_env`` reads ``MEMTAPE_FORGETTING_*``."""

    enabled: bool = True
    exempt_source_kinds: tuple[str, ...] = ("health",)
    unit_days: float = 7.0  # one strength unit keeps ~37% retention after this many days
    reinforcement: float = 1.0
    floor: float = 0.5

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ForgettingPolicy":
        env = os.environ if env is None else env
        default = cls()
        exempt = env.get("MEMTAPE_FORGETTING_EXEMPT")
        return cls(
            enabled=env.get("MEMTAPE_FORGETTING_ENABLED", str(default.enabled)).strip().lower() in ("1", "true", "yes", "on"),
            exempt_source_kinds=tuple(k.strip() for k in exempt.split(",") if k.strip()) if exempt is not None else default.exempt_source_kinds,
            unit_days=float(env.get("MEMTAPE_FORGETTING_UNIT_DAYS", default.unit_days)),
            reinforcement=float(env.get("MEMTAPE_FORGETTING_REINFORCEMENT", default.reinforcement)),
            floor=float(env.get("MEMTAPE_FORGETTING_FLOOR", default.floor)),
        )

    def applies_to(self, source_kind: str | None) -> bool:
        return self.enabled and source_kind not in self.exempt_source_kinds


OFF = ForgettingPolicy(enabled=False)


def retention(strength: float | None, last_recalled: datetime | None, happened: datetime | None,
              now: datetime, unit_days: float) -> float:
    """Ebbinghaus retention ``exp(-t/S)`` in [0, 1]; a memory with no time at all is fully retained."""
    anchor = last_recalled or happened
    if anchor is None:
        return 1.0
    elapsed = max(0.0, (now - anchor).total_seconds()) / (SECONDS_PER_DAY * unit_days)
    return math.exp(-elapsed / max(strength or INITIAL_STRENGTH, 1e-6))


def ranking_weight(policy: ForgettingPolicy, row: Mapping, now: datetime) -> float:
    """The factor a memory's recall score is multiplied by: 1 when forgetting does not apply to it."""
    if not policy.applies_to(row.get("source_kind")):
        return 1.0
    r = retention(row.get("strength"), row.get("last_recalled"), row.get("end_time") or row.get("start_time"), now, policy.unit_days)
    return policy.floor + (1.0 - policy.floor) * r


def _where(tenant: str, memory_ids: Iterable[str] | None = None) -> pc.Expression:
    where = column_is("tenant", tenant)
    return where if memory_ids is None else where & any_of("memory_id", memory_ids)


def reinforce(store: Store, tenant: str, memory_ids: list[str], policy: ForgettingPolicy, now: datetime | None = None) -> list[dict]:
    """Strengthen the memories recall just returned and restart their decay; returns the rows written."""
    if not memory_ids or not policy.enabled:
        return []
    now = now or datetime.now(timezone.utc)
    rows = store.read("memories", where=_where(tenant, memory_ids)).to_pylist()
    changed = [r for r in rows if policy.applies_to(r["source_kind"])]
    for row in changed:
        row["strength"] = (row["strength"] or INITIAL_STRENGTH) + policy.reinforcement
        row["last_recalled"] = now
    if changed:
        store.upsert("memories", changed)
    return changed


def forget(store: Store, tenant: str, below: float, policy: ForgettingPolicy, now: datetime | None = None,
           dry_run: bool = False) -> list[str]:
    """Archive the tenant's memories whose retention is below ``below``; return their ids.

    Raw events, triples and entities are untouched, so an archived memory can
    be rebuilt or restored; recall simply stops seeing it.
    """
    now = now or datetime.now(timezone.utc)
    rows = store.read("memories", where=_where(tenant) & not_archived()).to_pylist()
    weak = [r for r in rows if policy.applies_to(r["source_kind"])
            and retention(r["strength"], r["last_recalled"], r["end_time"] or r["start_time"], now, policy.unit_days) < below]
    if weak and not dry_run:
        for row in weak:
            row["archived"] = True
        store.upsert("memories", weak)
    return [r["memory_id"] for r in weak]
