"""Beam pipeline options from memtape's flags: the runner is always named explicitly.

Beam's default DirectRunner first tries to fetch the Prism runner, which this
environment cannot download, so memtape never leaves the choice to Beam.
``DaskRunner`` means memtape's fixed subclass of Beam's (``pipelines.dask_runner``).
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

DEFAULT_RUNNER = "DirectRunner"
_RUNNER_CLASSES = {"DaskRunner": "memtape.pipelines.dask_runner.DaskRunner"}


def pipeline_options(runner: str = DEFAULT_RUNNER, workers: int = 1, extra: tuple[str, ...] = ()) -> PipelineOptions:
    """Options for ``runner``; ``workers`` > 1 on the direct runner means that many processes.

    On ``DaskRunner`` the scheduler is ``--dask_client_address`` in ``extra``
    (without it, Beam starts a local Dask cluster for the run).
    """
    args = [f"--runner={_RUNNER_CLASSES.get(runner, runner)}", *extra]
    if runner in ("DirectRunner", "SwitchingDirectRunner") and workers > 1:
        args += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    return PipelineOptions(args, save_main_session=False)
