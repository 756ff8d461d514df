"""memtape's DaskRunner: Beam's DaskRunner with the fixes a multi-branch batch pipeline needs.

Batch only; like Beam's, it ignores windows (memtape's batch pipeline uses
none). Beam 2.77's runner computes only the branch of the last transform it
visits, hands every output of a multi-output ParDo to the readers of each of
them, drops what DoFns emit in ``finish_bundle`` (``BatchElements``,
``RunInference``) and reports no metrics. This subclass fixes all four in the
runner, so the pipeline stays as written for every other runner. It only
schedules transforms; it reads and writes no data itself. Needs
``dask[distributed]`` (``apache-beam[dask]``); select it with ``--runner DaskRunner``.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, Iterable

import apache_beam as beam
import dask.bag as db
from apache_beam import pvalue
from apache_beam.metrics.execution import MetricsContainer
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import AppliedPTransform, Pipeline, PipelineVisitor
from apache_beam.runners import common
from apache_beam.runners.dask import dask_runner, transform_evaluator as dask_ops
from apache_beam.runners.dask.overrides import dask_overrides
from apache_beam.runners.direct.direct_metrics import DirectMetrics
from apache_beam.runners.runner import PipelineState
from apache_beam.runners.worker import statesampler
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.utils import counters

_METRICS_TAG = "__memtape_metrics__"  # an output tag no reader asks for: each bundle's metric updates travel under it
_NOTHING = object()


class _Receivers(dict):
    """Output receivers of one bundle: every output lands in ``out`` as (tag, value); main has tag None."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[tuple[str | None, Any]] = []

    def __missing__(self, tag: str | None) -> common.Receiver:
        receiver = self[tag] = _TagReceiver(tag, self.out)
        return receiver


@dataclasses.dataclass
class _TagReceiver(common.Receiver):
    tag: str | None
    out: list[tuple[str | None, Any]]

    def receive(self, windowed_value: Any) -> None:
        self.out.append((self.tag, windowed_value.value))


def _run_bundle(items: Iterable[Any], fn: beam.DoFn, window_fn: Any, label: str, side_inputs: Any,
                args: list, kwargs: dict) -> list[tuple[str | None, Any]]:
    """Run one Dask partition as a Beam bundle; return its tagged outputs and, last, its metric updates.

    Shuffles and flattens leave many partitions empty; like any runner, this
    makes no bundle of them, so no DoFn loads its model for nothing.
    """
    items = iter(items)
    first = next(items, _NOTHING)
    if first is _NOTHING:
        return []
    receivers = _Receivers()
    handler = common._OutputHandler(
        window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
        per_element_output_counter=None, output_batch_converter=None,
        process_yields_batches=False, process_batch_yields_elements=False)
    invoker = common.DoFnInvoker.create_invoker(
        common.DoFnSignature(fn), handler, context=common.DoFnContext(label, state=None),
        side_inputs=side_inputs, input_args=args, input_kwargs=kwargs, user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam())
    container = MetricsContainer(label)
    sampler = statesampler.StateSampler(label, counters.CounterFactory())
    statesampler.set_current_tracker(sampler)
    try:
        with sampler.scoped_state(label, "process", metrics_container=container):
            invoker.invoke_setup()
            invoker.invoke_start_bundle()
            for item in itertools.chain([first], items):
                invoker.invoke_process(dask_ops.get_windowed_value(item, window_fn))
            invoker.invoke_finish_bundle()
            invoker.invoke_teardown()
    finally:
        statesampler.set_current_tracker(None)
    return receivers.out + [(_METRICS_TAG, container.get_cumulative())]


def _has_tag(tag: str | None, item: tuple[str | None, Any]) -> bool:
    return item[0] == tag


def _value(item: tuple[str | None, Any]) -> Any:
    return item[1]


class _BagVisitor(PipelineVisitor):
    """Translates each primitive transform to a Dask bag, routing each tagged output only to its readers."""

    def __init__(self, bag_kwargs: dict) -> None:
        self.bag_kwargs = bag_kwargs
        self.bags: dict[AppliedPTransform, db.Bag] = {}
        self.tagged: set[AppliedPTransform] = set()  # producers whose bags hold (tag, value) pairs
        self.consumed: set[AppliedPTransform] = set()

    def _read(self, pcoll: pvalue.PCollection) -> db.Bag:
        producer = pcoll.producer
        assert producer is not None  # a PCollection this visitor reads was produced by a transform it visited
        self.consumed.add(producer)
        bag = self.bags[producer]
        if producer in self.tagged:
            return bag.filter(functools.partial(_has_tag, pcoll.tag)).map(_value)
        return bag

    def visit_transform(self, node: AppliedPTransform) -> None:
        transform = node.transform
        inputs: list[Any] = [None if isinstance(i, pvalue.PBegin) else self._read(i) for i in node.inputs]
        side_inputs = [SideInputMap(type(si), si._view_options(),  # type: ignore[arg-type]  # the class, as Beam's own runners pass
                                    dask_ops.DaskBagWindowedIterator(self._read(si.pvalue), si._window_mapping_fn))
                       for si in node.side_inputs] or None
        if type(transform) is beam.ParDo:
            args, kwargs = transform.raw_side_inputs
            main = next(iter(node.main_inputs.values()))
            window_fn = main.windowing.windowfn if hasattr(main, "windowing") else None
            self.bags[node] = inputs[0].map_partitions(
                _run_bundle, transform.fn, window_fn, node.full_label, side_inputs, list(args), kwargs)
            self.tagged.add(node)
            return
        op_class: type[Any] = dask_ops.TRANSLATIONS.get(type(transform), dask_ops.NoOp)  # each a concrete DaskBagOp
        op = op_class(node, bag_kwargs=self.bag_kwargs)
        flatten = isinstance(op, dask_ops.Flatten)
        self.bags[node] = op.apply(input_bag=inputs if flatten or len(inputs) != 1 else inputs[0],
                                   side_inputs=side_inputs)

    def sinks(self) -> list[db.Bag]:
        """Bags no transform reads: computing them computes the whole pipeline."""
        return [bag for node, bag in self.bags.items() if node not in self.consumed and bag is not None]

    def metric_updates(self) -> list[db.Bag]:
        return [self.bags[node].filter(functools.partial(_has_tag, _METRICS_TAG)).map(_value) for node in self.tagged]


@dataclasses.dataclass
class _DaskResult(dask_runner.DaskRunnerResult):
    metric_futures: list = dataclasses.field(default_factory=list)
    _metrics: DirectMetrics = dataclasses.field(init=False, default_factory=DirectMetrics)

    def wait_until_finish(self, duration: int | None = None) -> str:
        if PipelineState.is_terminal(self.state):
            return self.state
        try:
            state = super().wait_until_finish(duration)
            bundle_ids = itertools.count()
            for updates in itertools.chain.from_iterable(self.client.gather(self.metric_futures)):
                bundle = next(bundle_ids)
                self._metrics.commit_physical(bundle, updates)
                self._metrics.commit_logical(bundle, updates)
        finally:
            self.client.close()
        return state

    def metrics(self) -> DirectMetrics:
        return self._metrics


class DaskRunner(dask_runner.DaskRunner):
    """Beam's DaskRunner that runs every branch, routes tagged outputs, keeps finish_bundle output and counts metrics."""

    def run_pipeline(self, pipeline: Pipeline, options: PipelineOptions) -> _DaskResult:
        import dask.distributed as ddist

        dask_options = options.view_as(dask_runner.DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = dask_runner.DaskOptions._extract_bag_kwargs(dask_options)
        client = ddist.Client(**dask_options)
        pipeline.replace_all(dask_overrides())
        visitor = _BagVisitor(bag_kwargs)
        pipeline.visit(visitor)
        sinks, metrics = visitor.sinks(), visitor.metric_updates()
        futures = client.compute(sinks + metrics)
        return _DaskResult(client, futures, futures[len(sinks):])
