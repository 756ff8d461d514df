"""``memtape eval triples``: CaRB scores of the dependency-rule extractor and of textacy's SVO baseline.

Both systems read the same spaCy parses; every extraction is scored at one
confidence with the CaRB scorer in ``memtape.evals._carb``. Speed is measured
as sentences per second for parsing alone and for parsing plus extraction.
This command reads the two files it is given and prints; it writes nothing.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import click

from memtape.errors import UserError

DEFAULT_REPEATS = 3
PARSE_BATCH_SIZE = 64


def _timed_parse(nlp: Any, sentences: list[str], repeats: int) -> tuple[list[Any], float]:
    """The parses and the median seconds one full pass over ``sentences`` took."""
    times, docs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        docs = list(nlp.pipe(sentences, batch_size=PARSE_BATCH_SIZE))
        times.append(time.perf_counter() - start)
    return docs, statistics.median(times)


def _timed_extract(docs: list[Any], repeats: int) -> tuple[list[list[tuple[str, tuple[str, ...]]]], float]:
    """CaRB-view extractions per doc and the median seconds extraction took over all docs."""
    from memtape.transforms.triples import carb_tuple, extract

    times, out = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        out = [[carb_tuple(doc, ex) for ex in extract(doc)] for doc in docs]
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def _textacy_svo(docs: list[Any]) -> list[list[tuple[str, tuple[str, ...]]]] | None:
    """textacy's subject-verb-object triples on the same parses, or None when textacy is not installed."""
    try:
        from textacy.extract import subject_verb_object_triples
    except ImportError:
        return None
    words = lambda toks: " ".join(t.text for t in sorted(toks, key=lambda t: t.i))  # noqa: E731
    return [[(words(t.verb), (words(t.subject), words(t.object))) for t in subject_verb_object_triples(doc)] for doc in docs]


def _scores(gold: dict, sentences: list[str], extractions: list[list[tuple[str, tuple[str, ...]]]]) -> dict[str, float]:
    from memtape.evals._carb import Tuple, score, sentence_key

    predicted = {sentence_key(s): [Tuple(rel, args) for rel, args in exs] for s, exs in zip(sentences, extractions)}
    result = score(gold, predicted)
    return {"precision": round(result.precision, 4), "recall": round(result.recall, 4), "f1": round(result.f1, 4),
            "extractions": result.predicted_tuples}


def evaluate(sentences_path: Path, gold_path: Path, model: str, repeats: int) -> dict[str, Any]:
    """Scores and speeds of the extractor and the textacy baseline on a CaRB-format split."""
    from memtape.evals._carb import read_gold
    from memtape.transforms.models import spacy_model
    from memtape.transforms.triples import NLP_DISABLE

    sentences = [s.strip() for s in sentences_path.read_text(encoding="utf-8").splitlines() if s.strip()]
    if not sentences:
        raise UserError(f"{sentences_path}: no sentences")
    with gold_path.open(encoding="utf-8") as fh:
        gold = read_gold(fh)
    if not gold:
        raise UserError(f"{gold_path}: no gold tuples (expected sentence TAB relation TAB arg1 ...)")
    try:
        nlp = spacy_model(model, disable=NLP_DISABLE)
    except OSError as exc:
        raise UserError(f"spaCy model {model!r} is not installed: {exc}") from exc
    docs, parse_s = _timed_parse(nlp, sentences, repeats)
    extractions, extract_s = _timed_extract(docs, repeats)
    result: dict[str, Any] = _scores(gold, sentences, extractions)
    result.update(
        {
            "sentences": len(sentences),
            "sentences_per_s": round(len(sentences) / (parse_s + extract_s), 1),
            "parse_sentences_per_s": round(len(sentences) / parse_s, 1),
            "extraction_overhead": round(extract_s / parse_s, 4),
            "model": model,
        }
    )
    baseline = _textacy_svo(docs)
    result["baselines"] = {"textacy_svo": _scores(gold, sentences, baseline) if baseline is not None else {"error": "textacy is not installed"}}
    return result


@click.command()
@click.option("--sentences", "sentences_path", required=True, type=click.Path(path_type=Path), help="One sentence per line (CaRB's sentences file).")
@click.option("--gold", "gold_path", required=True, type=click.Path(path_type=Path), help="CaRB gold: sentence TAB relation TAB arg1 TAB arg2 ...")
@click.option("--format", "fmt", type=click.Choice(["json", "text"]), default="json", show_default=True)
@click.option("--model", default=None, help="spaCy pipeline (package name or path); defaults to the packaged small English model.")
@click.option("--repeats", default=DEFAULT_REPEATS, show_default=True, type=click.IntRange(1, 20), help="Timing repeats; the median is reported.")
def command(sentences_path: Path, gold_path: Path, fmt: str, model: str | None, repeats: int) -> None:
    """Score SPO extraction on CaRB (precision, recall, F1) against textacy's SVO baseline, with speeds."""
    from memtape.transforms.models import DEFAULT_SPACY_MODEL

    for path in (sentences_path, gold_path):
        if not path.is_file():
            raise UserError(f"{path}: no such file")
    result = evaluate(sentences_path, gold_path, model or DEFAULT_SPACY_MODEL, repeats)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
        return
    base = result["baselines"]["textacy_svo"]
    click.echo(f"extractor  P={result['precision']:.3f} R={result['recall']:.3f} F1={result['f1']:.3f}")
    if "f1" in base:
        click.echo(f"textacy    P={base['precision']:.3f} R={base['recall']:.3f} F1={base['f1']:.3f}")
    click.echo(f"speed      parse {result['parse_sentences_per_s']} sent/s,"
               f" parse+extract {result['sentences_per_s']} sent/s (+{result['extraction_overhead']:.1%})")
