"""Derive episodes, triples, entities and memories from landed raw events, exactly once.

Raw events are landed first (insert-only); this step then selects the raw
events its checkpoint has not covered yet, runs ``BuildMemories`` over them
with the state carried from the last committed generation, lands every
derived table, and commits the checkpoint. See ``pipelines.state`` for why a
crash at any point neither loses nor duplicates a derived row.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime

import apache_beam as beam

from memtape.connectors.beam_io import NEW_ROWS_PREFIX, RAW, ReadFromLance, WriteToLance
from memtape.connectors.lance_store import Store, quote_literal
from memtape.pipelines.memory import BuildMemories, StateTarget
from memtape.pipelines.merging import fold_of
from memtape.pipelines.progress import CountProgress
from memtape.pipelines.state import (Checkpoint, ReadCarriedState, carried_where, commit_checkpoint, load_checkpoint,
                                     next_generation, prune_states)
from memtape.schemas.records import utcnow
from memtape.query import sql


@dataclasses.dataclass
class DeriveResult:
    events: int
    landed: dict[str, int]
    new: dict[str, int] = dataclasses.field(default_factory=dict)  # of ``landed``, rows whose key was not stored yet


def _ts(value: datetime) -> str:
    return f"timestamp '{value.strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def land_tables(outputs: dict[str, beam.PCollection], store: Store) -> None:
    """Attach one single-writer Lance sink per table to the pipeline's outputs, counting derived rows as progress."""
    for table, rows in outputs.items():
        if table != RAW:  # raw events are counted as records where they are read
            rows = rows | f"Progress_{table}" >> CountProgress(table)
        rows | f"Land_{table}" >> WriteToLance(table, store.home, store.storage_options, fold_of(table))


def derive(store: Store, tenant: str, options: beam.options.pipeline_options.PipelineOptions,
           ingest_path: str = "backfill", close_open: bool = False, now: datetime | None = None) -> DeriveResult:
    """Process the tenant's raw events ingested by ``ingest_path`` since the checkpoint."""
    checkpoint = load_checkpoint(store, tenant, f"{ingest_path}:{tenant}")
    prune_states(store, checkpoint)  # state rows of a run that died before its commit must not count after the next one
    base = f"tenant = {quote_literal(tenant)} AND ingest_path = {quote_literal(ingest_path)}"
    since = checkpoint.progress.get("ingest_watermark")
    pending = base + (f" AND ingest_time > {_ts(datetime.fromisoformat(since))}" if since else "")
    newest = sql(f"SELECT count(*) AS n, max(ingest_time) AS t FROM raw_events WHERE {pending.replace('timestamp ', 'TIMESTAMPTZ ')}",
                 store).to_pylist()[0]
    if newest["n"] == 0 and not close_open:
        return DeriveResult(0, {})
    watermark = newest["t"] or (datetime.fromisoformat(since) if since else None)
    selected = pending + (f" AND ingest_time <= {_ts(watermark)}" if watermark else "")
    generation = next_generation(checkpoint.generation)
    with beam.Pipeline(options=options) as p:
        raw = p | "PendingRaw" >> ReadFromLance("raw_events", store.home, store.storage_options, selected)
        carried = p | "Carried" >> ReadCarriedState(store, carried_where([checkpoint]))
        outputs = {"raw": raw, "carried": carried} | "BuildMemories" >> BuildMemories(
            StateTarget(checkpoint.name, generation), close_open, now or utcnow())
        land_tables(outputs, store)
    committed = Checkpoint(checkpoint.name, tenant, generation,
                           {"ingest_watermark": watermark.isoformat() if watermark else since})
    commit_checkpoint(store, committed)
    prune_states(store, committed)
    return DeriveResult(newest["n"], _landed(p.result), _landed(p.result, NEW_ROWS_PREFIX))


def _landed(result: beam.runners.runner.PipelineResult, prefix: str = "landed_") -> dict[str, int]:
    """Rows per table from the sinks' counters: every row offered (``landed_``) or the new keys only (``new_``)."""
    landed: dict[str, int] = {}
    for counter in result.metrics().query()["counters"]:
        name = counter.key.metric.name
        if name.startswith(prefix):
            table = name.removeprefix(prefix)
            landed[table] = landed.get(table, 0) + counter.committed
    return landed
