"""Beam pipeline options from memtape's flags: the runner is always named explicitly.

Beam's default DirectRunner first tries to fetch the Prism runner, which this
environment cannot download, so memtape never leaves the choice to Beam.
``DaskRunner`` means memtape's fixed subclass of Beam's (``pipelines.dask_runner``).
The direct runner's worker processes default to every core this process may
use: spaCy's parse holds the interpreter, so only processes spread it.
"""
from __future__ import annotations

import os

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

DEFAULT_RUNNER = "DirectRunner"
# Below this many events a run stays in one process: each worker process starts an interpreter and loads spaCy,
# MiniLM and the static vectors, which costs more than a small run's whole parse saves.
PARALLEL_MIN_EVENTS = 1000
_RUNNER_CLASSES = {"DaskRunner": "memtape.pipelines.dask_runner.DaskRunner"}


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which a container or ``taskset`` may narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(events: int) -> int:
    """Worker processes for a run over ``events`` events when the user named none: every core, unless the run is small."""
    return available_cores() if events >= PARALLEL_MIN_EVENTS else 1


def pipeline_options(runner: str = DEFAULT_RUNNER, workers: int = 1, extra: tuple[str, ...] = ()) -> PipelineOptions:
    """Options for ``runner``; ``workers`` > 1 on the direct runner means that many processes.

    On ``DaskRunner`` the scheduler is ``--dask_client_address`` in ``extra``
    (without it, Beam starts a local Dask cluster for the run).
    """
    args = [f"--runner={_RUNNER_CLASSES.get(runner, runner)}", *extra]
    if runner in ("DirectRunner", "SwitchingDirectRunner") and workers > 1:
        # the worker processes log every step at INFO on the user's terminal; their warnings and errors still show
        args += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing", "--default_sdk_harness_log_level=WARNING"]
    return PipelineOptions(args, save_main_session=False)


def model_threads(options: PipelineOptions) -> int | None:
    """Torch threads per worker process under ``options``: this process's cores shared among the direct runner's
    worker processes, else None (torch's default). Each worker would otherwise start a thread per core."""
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode != "multi_processing" or direct.direct_num_workers <= 1:
        return None
    return max(1, available_cores() // direct.direct_num_workers)
