"""Every parser survives a bounded fuzz run, and every crash ever found stays fixed.

Each target of ``fuzz_targets`` runs for ``MEMTAPE_FUZZ_SECONDS`` (3.5 s by
default, about 40 s for all of them); ``make fuzz`` runs them longer. The
committed inputs in ``fixtures/fuzz_regressions`` are replayed one by one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fuzz_targets import TARGETS, regression_cases, replay, fuzz

CI_SECONDS = float(os.environ.get("MEMTAPE_FUZZ_SECONDS", "3.5"))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_parser_fuzzed_for_a_bounded_time_never_crashes_loses_or_duplicates(name):
    stats = fuzz(TARGETS[name], CI_SECONDS)
    print(json.dumps(stats.summary()))
    assert [crash.error for crash in stats.crashes] == []
    assert stats.lost == 0 and stats.duplicates == 0
    assert stats.executions >= 10 and stats.events > 0 and stats.letters > 0


def test_regression_corpus_covers_the_crashes_found_so_far():
    assert {name for name, _ in regression_cases()} >= {"telegram", "fhir_bundle", "jsonl", "slack"}


@pytest.mark.parametrize("name,file", regression_cases(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_committed_crash_input_now_reads_as_dead_letters(name, file):
    outcome = replay(TARGETS[name], file.read_bytes())
    assert outcome.letters >= 1
