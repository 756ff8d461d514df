"""The dedupe stage as a Beam transform: rows grouped by state scope, deduplicated in event order, state carried out.

The carried state travels as ``(scope, TenantState JSON)`` pairs joined to the
rows in the pipeline, never pickled into a DoFn, so a micro-batch's result does
not depend on which worker ran the one before.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Iterator

import apache_beam as beam

from memtape.transforms.dedupe.deduper import Deduper, tenant_of
from memtape.transforms.dedupe.state import DedupeState, TenantState

KEPT, DROPPED, STATE = "kept", "dropped", "state"


class _DedupeScopeFn(beam.DoFn):
    """Runs one scope's rows of a micro-batch in event order against the state carried for that scope."""

    def __init__(self, scope_of: Callable[[dict], str]) -> None:
        self._scope_of = scope_of

    def process(self, element: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[Any]:
        scope, grouped = element
        rows = list(grouped["rows"])
        if rows:  # the carried state of a scope with nothing new stays as it is
            yield from self._dedupe(scope, rows, next(iter(grouped["state"]), None))

    def _dedupe(self, scope: str, rows: list[dict], carried: str | None) -> Iterator[Any]:
        state = TenantState.from_dict(json.loads(carried)) if carried else TenantState()
        deduper = Deduper(DedupeState({scope: state}), self._scope_of)
        for kept, dropped in deduper.process_batch(rows):
            if kept is not None:
                yield kept
            else:
                yield beam.pvalue.TaggedOutput(DROPPED, dropped)
        yield beam.pvalue.TaggedOutput(STATE, (scope, json.dumps(state.to_dict())))


class Dedupe(beam.PTransform):
    """raw_events rows -> kept units (main), dropped units ``dropped``, per-scope state ``state``.

    Rows are deduplicated within a state scope: the tenant by default, or any
    finer key ``scope_of(row)`` gives (the streaming job uses tenant plus Kafka
    partition, so each partition's state moves with it). The input is the rows,
    or ``{"rows": rows, "state": state}`` where ``state`` holds ``(scope,
    TenantState JSON)`` pairs from the previous micro-batch, joined to the rows
    by scope in the pipeline (never pickled into a DoFn); the ``state`` output
    holds the same pairs for the next one.
    """

    def __init__(self, scope_of: Callable[[dict], str] | None = None) -> None:
        super().__init__()
        self._scope_of = scope_of or tenant_of

    def expand(self, inputs: beam.PCollection | dict[str, beam.PCollection]) -> Any:
        rows, state = (inputs["rows"], inputs["state"]) if isinstance(inputs, dict) else (inputs, None)
        if state is None:
            state = rows.pipeline | "NoCarriedState" >> beam.Create([])
        return (
            {"rows": rows | "KeyByScope" >> beam.Map(lambda row, key=self._scope_of: (key(row), row)), "state": state}
            | "GroupByScope" >> beam.CoGroupByKey()
            | "DedupeInEventOrder" >> beam.ParDo(_DedupeScopeFn(self._scope_of)).with_outputs(DROPPED, STATE, main=KEPT)
        )
