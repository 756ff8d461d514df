"""Throughput of SPO extraction against the spaCy parse it reads: sentences/s for parsing alone,
parsing plus CaRB-view extraction, and parsing plus full ``triples`` rows with entity resolution.

Run: python benchmarks/bench_triples.py [--sentences FILE] [--repeats N]; prints JSON (medians).
Reads the sentences file only; writes nothing.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

DEFAULT_SENTENCES = Path(__file__).resolve().parents[2] / "shared" / "data" / "triples" / "carb_dev_sentences.txt"


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=Path, default=DEFAULT_SENTENCES)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from memtape.transforms.entities import EntityResolver
    from memtape.transforms.models import spacy_model
    from memtape.transforms.triples import NLP_BATCH_SIZE, NLP_DISABLE, carb_tuple, extract, triple_rows

    sentences = [s for s in args.sentences.read_text(encoding="utf-8").splitlines() if s.strip()]
    nlp = spacy_model(disable=NLP_DISABLE)
    docs = list(nlp.pipe(sentences, batch_size=NLP_BATCH_SIZE))
    parse_s = _median_seconds(lambda: list(nlp.pipe(sentences, batch_size=NLP_BATCH_SIZE)), args.repeats)
    extract_s = _median_seconds(lambda: [[carb_tuple(d, e) for e in extract(d)] for d in docs], args.repeats)
    resolver = EntityResolver("bench")
    rows_s = _median_seconds(
        lambda: [triple_rows(d, tenant="bench", raw_event_id=str(i), resolver=resolver) for i, d in enumerate(docs)], args.repeats)
    n = len(sentences)
    print(
        json.dumps(
            {
                "sentences": n,
                "components": nlp.pipe_names,
                "parse_sentences_per_s": round(n / parse_s, 1),
                "parse_extract_sentences_per_s": round(n / (parse_s + extract_s), 1),
                "parse_rows_sentences_per_s": round(n / (parse_s + rows_s), 1),
                "extraction_overhead": round(extract_s / parse_s, 4),
                "rows_overhead": round(rows_s / parse_s, 4),
                "repeats": args.repeats,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
