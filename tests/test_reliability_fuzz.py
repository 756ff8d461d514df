"""Every parser survives a fixed-seed fuzz run, and every crash ever found stays fixed.

Each target of ``fuzz_targets`` runs the same hypothesis rounds on every run
(``SEEDS``), so the suite is deterministic; the open-ended random search is
``make fuzz``, whose crashes land in ``fixtures/fuzz_regressions`` and are
replayed here one by one.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fuzz_targets import TARGETS, fuzz_seeded, regression_cases, replay

SEEDS = [20, 21, 22]  # three rounds of 25 cases per target, the same cases on every run


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_parser_fuzzed_with_fixed_seeds_never_crashes_loses_or_duplicates(name):
    stats = fuzz_seeded(TARGETS[name], SEEDS)
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
