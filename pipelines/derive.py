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
import pyarrow as pa
import pyarrow.compute as pc

from memtape.connectors.beam_io import NEW_ROWS_PREFIX, RAW, LanceWriteConfig, ReadFromLance
from memtape.connectors.lance_store import Store, column_is
from memtape.pipelines.memory import BuildMemories, StateTarget
from memtape.pipelines.progress import CountProgress
from memtape.pipelines.runner import model_threads
from memtape.pipelines.state import (Checkpoint, ReadCarriedState, carried_where, commit_checkpoint, load_checkpoint,
                                     next_generation, prune_states)
from memtape.schemas.records import utcnow


@dataclasses.dataclass
class DeriveResult:
    events: int
    landed: dict[str, int]
    new: dict[str, int] = dataclasses.field(default_factory=dict)  # of ``landed``, rows whose key was not stored yet


def _ingest_time(value: datetime) -> pa.Scalar:
    """``value`` as a value of ``raw_events.ingest_time`` (a naive time is taken as UTC, as the table stores it)."""
    return pa.scalar(value, pa.timestamp("us", "UTC"))


def land_tables(outputs: dict[str, beam.PCollection], store: Store) -> None:
    """Attach one Lance sink per table to the pipeline's outputs, counting derived rows as progress."""
    for table, rows in outputs.items():
        if table != RAW:  # raw events are counted as records where they are read
            rows = rows | f"Progress_{table}" >> CountProgress(table)
        rows | f"Land_{table}" >> LanceWriteConfig(table, store.home, store.storage_options).create_write_transform()


def derive(store: Store, tenant: str, options: beam.options.pipeline_options.PipelineOptions,
           ingest_path: str = "backfill", close_open: bool = False, now: datetime | None = None) -> DeriveResult:
    """Process the tenant's raw events ingested by ``ingest_path`` since the checkpoint."""
    checkpoint = load_checkpoint(store, tenant, f"{ingest_path}:{tenant}")
    prune_states(store, checkpoint)  # state rows of a run that died before its commit must not count after the next one
    pending = column_is("tenant", tenant) & column_is("ingest_path", ingest_path)
    since = checkpoint.progress.get("ingest_watermark")
    if since:
        pending = pending & (pc.field("ingest_time") > _ingest_time(datetime.fromisoformat(since)))
    times = store.read("raw_events", where=pending, columns=["ingest_time"]).column("ingest_time")
    if len(times) == 0 and not close_open:
        return DeriveResult(0, {})
    watermark = pc.max(times).as_py() or (datetime.fromisoformat(since) if since else None)
    selected = pending & (pc.field("ingest_time") <= _ingest_time(watermark)) if watermark else pending
    generation = next_generation(checkpoint.generation)
    with beam.Pipeline(options=options) as p:
        raw = p | "PendingRaw" >> ReadFromLance("raw_events", store.home, store.storage_options, selected)
        carried = p | "Carried" >> ReadCarriedState(store, carried_where([checkpoint]))
        outputs = {"raw": raw, "carried": carried} | "BuildMemories" >> BuildMemories(
            StateTarget(checkpoint.name, generation), close_open, now or utcnow(), model_threads=model_threads(options))
        land_tables(outputs, store)
    committed = Checkpoint(checkpoint.name, tenant, generation,
                           {"ingest_watermark": watermark.isoformat() if watermark else since})
    commit_checkpoint(store, committed)
    prune_states(store, committed)
    return DeriveResult(len(times), _landed(p.result), _landed(p.result, NEW_ROWS_PREFIX))


def _landed(result: beam.runners.runner.PipelineResult, prefix: str = "landed_") -> dict[str, int]:
    """Rows per table from the sinks' counters: every row offered (``landed_``) or the new keys only (``new_``)."""
    landed: dict[str, int] = {}
    for counter in result.metrics().query()["counters"]:
        name = counter.key.metric.name
        if name.startswith(prefix):
            table = name.removeprefix(prefix)
            landed[table] = landed.get(table, 0) + counter.committed
    return landed
