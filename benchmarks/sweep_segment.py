"""Sensitivity of segmentation quality: DialSeg711 Pk with one tunable moved at a time from its default.

Usage: python benchmarks/sweep_segment.py [--data ../shared/data/segmentation/dialseg711.json]
Prints one JSON line per setting (the defaults first): the setting, Pk, WindowDiff and
episodes per dialogue. A flat result means the defaults are not a knife-edge fit to this file.
Module constants are set for one run and restored after it; nothing is written.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator

from memtape.evals.segmentation import _score, load_dialogues, segment_dialogues
from memtape.transforms import segment

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "segmentation" / "dialseg711.json"
# (SegmenterConfig field or module constant, value): each a neighbour of the default
SETTINGS: list[tuple[str, Any]] = [
    ("gamma", 0.8), ("gamma", 1.2), ("unit_weight", 0.25), ("unit_weight", 1.0), ("refine", "modularity"),
    ("BOUNDARY_WINDOW", 50), ("MAX_CONDUCTANCE", 0.8), ("MAX_CONDUCTANCE", float("inf")),
    ("REFINE_MARGIN", 0.2), ("REFINE_MARGIN", 0.6), ("COHESION_BEFORE", 3), ("DEPTH_RADIUS", 2),
]


@contextlib.contextmanager
def _constant(name: str, value: Any) -> Iterator[None]:
    saved = getattr(segment, name)
    setattr(segment, name, value)
    refiner = segment._REFINERS["conductance"]
    segment._REFINERS["conductance"] = (segment.conductance, segment.MAX_CONDUCTANCE)
    try:
        yield
    finally:
        setattr(segment, name, saved)
        segment._REFINERS["conductance"] = refiner


def run(dialogues: list[dict], name: str | None = None, value: Any = None) -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(segment.SegmenterConfig)}
    config = segment.SegmenterConfig(**({name: value} if name in fields else {}))
    with _constant(name, value) if name and name not in fields else contextlib.nullcontext():
        hyps, _ = segment_dialogues(dialogues, config)
    return {"setting": f"{name}={value}" if name else "defaults", **_score(dialogues, hyps),
            "episodes_per_dialogue": round(sum(map(len, hyps)) / len(hyps), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    dialogues = load_dialogues(args.data)
    print(json.dumps(run(dialogues)), flush=True)
    for name, value in SETTINGS:
        print(json.dumps(run(dialogues, name, value)), flush=True)


if __name__ == "__main__":
    main()
