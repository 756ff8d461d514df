"""Fuzz every parser for a fixed time each and report executions and findings (``make fuzz``).

Each target of ``tests/fuzz_targets.py`` runs for ``--seconds``; every distinct
crash is shrunk by hypothesis and written to
``tests/fixtures/fuzz_regressions/<target>/<hash>.bin``, where the CI test
replays it. Prints one JSON object per target and a total line; exits 1 when
anything was found. Run: python benchmarks/fuzz.py [--seconds N] [--target NAME ...]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_targets import REGRESSIONS, TARGETS, Crash, fuzz  # noqa: E402

DEFAULT_SECONDS = 60


def save(target: str, crash: Crash) -> Path:
    """Write a crashing input where the CI test replays it; the name is its content hash."""
    folder = REGRESSIONS / target
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(crash.data).hexdigest()[:16]}.bin"
    path.write_bytes(crash.data)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="time per target")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="only these targets")
    args = parser.parse_args()
    executions = findings = 0
    for name in args.target or list(TARGETS):
        stats = fuzz(TARGETS[name], args.seconds)
        report = stats.summary()
        report["saved"] = [str(save(name, crash)) for crash in stats.crashes]
        report["errors"] = [f"{crash.signature}: {crash.error}" for crash in stats.crashes]
        print(json.dumps(report), flush=True)
        executions += stats.executions
        findings += len(stats.crashes) + stats.lost + stats.duplicates
    print(json.dumps({"targets": len(args.target or TARGETS), "seconds_each": args.seconds,
                      "executions": executions, "findings": findings}))
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
