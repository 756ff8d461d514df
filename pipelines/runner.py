"""Beam pipeline options from memtape's flags: the runner is always named explicitly.

Beam's default DirectRunner first tries to fetch the Prism runner, which this
environment cannot download, so memtape never leaves the choice to Beam.
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

DEFAULT_RUNNER = "DirectRunner"


def pipeline_options(runner: str = DEFAULT_RUNNER, workers: int = 1, extra: tuple[str, ...] = ()) -> PipelineOptions:
    """Options for ``runner``; ``workers`` > 1 on the direct runner means that many processes."""
    args = [f"--runner={runner}", *extra]
    if runner in ("DirectRunner", "SwitchingDirectRunner") and workers > 1:
        args += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    return PipelineOptions(args, save_main_session=False)
