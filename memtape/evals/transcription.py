"""``memtape eval transcription``: word error rate and speed of the transcription stage against a bare faster-whisper call.

Every audio file under ``--audio-dir`` with a reference beside it (``name.txt``,
or a line ``text (fileid)`` of a ``*.transcription`` file in its folder, the
CMU Sphinx layout) is transcribed by the pipeline's own ``Transcriber`` (the
code Beam's DoFn runs, connector included) and by a bare ``WhisperModel.transcribe``
on the same model and decoding settings, alternating order over a few repeats;
real-time factors are medians. WER normalises case, punctuation and numbers.
This module measures only; it writes no table.
"""
from __future__ import annotations

import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

import click

from memtape.errors import UserError

_SPHINX_LINE = re.compile(r"^(?P<text>.*)\((?P<fileid>[^()]+)\)\s*$")
_SPHINX_MARKERS = re.compile(r"</?s>|<sil>|\[[^\]]*\]")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_NOT_WORD = re.compile(r"[^\w' ]+")
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_ORDINAL_ENDINGS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                    "nine": "ninth", "twelve": "twelfth"}
DEFAULT_REPEATS = 3


def number_words(n: int) -> str:
    """``42`` -> ``forty two``: references spell numbers out, Whisper writes digits, and neither is wrong."""
    for size, name in _SCALES:
        if n >= size:
            head, rest = divmod(n, size)
            return f"{number_words(head)} {name}" + (f" {number_words(rest)}" if rest else "")
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")


def _ordinal_words(n: int) -> str:
    words = number_words(n).split()
    last = words[-1]
    words[-1] = _ORDINAL_ENDINGS.get(last) or (last[:-1] + "ieth" if last.endswith("y") else last + "th")
    return " ".join(words)


def _spell_number(match: re.Match[str]) -> str:
    whole, _, fraction = match.group(0).partition(".")
    spoken = number_words(int(whole))
    return f" {spoken} point {' '.join(_ONES[int(d)] for d in fraction)} " if fraction else f" {spoken} "


def normalise(text: str) -> list[str]:
    """Words compared for WER: lower case, numbers spelled out, punctuation and hyphens gone, apostrophes kept."""
    text = _SPHINX_MARKERS.sub(" ", text.lower())
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text).replace("%", " percent")
    text = _ORDINAL.sub(lambda m: f" {_ordinal_words(int(m.group(1)))} ", text)
    text = _NUMBER.sub(_spell_number, text)
    text = _NOT_WORD.sub(" ", text.replace("-", " ").replace("_", " "))
    return [w.strip("'") for w in text.split() if w.strip("'")]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance: substitutions, deletions and insertions, as WER counts them."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def references(audio_dir: Path) -> dict[Path, str]:
    """Audio files under ``audio_dir`` that have a reference transcript, with that reference."""
    from memtape.connectors.sources.audio import MEDIA_SUFFIXES

    sphinx: dict[tuple[Path, str], str] = {}
    for listing in audio_dir.rglob("*.transcription"):
        for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
            if match := _SPHINX_LINE.match(line.strip()):
                sphinx[(listing.parent, match["fileid"].strip())] = match["text"]
    found: dict[Path, str] = {}
    for audio in sorted(p for p in audio_dir.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES):
        sidecar = audio.with_suffix(".txt")
        if sidecar.is_file():
            found[audio] = sidecar.read_text(encoding="utf-8", errors="replace")
        elif (audio.parent, audio.stem) in sphinx:
            found[audio] = sphinx[(audio.parent, audio.stem)]
    return found


def _wer(refs: dict[Path, str], hyps: dict[Path, str]) -> float:
    errors = sum(edit_distance(normalise(refs[p]), normalise(hyps.get(p, ""))) for p in refs)
    return errors / max(1, sum(len(normalise(r)) for r in refs.values()))


def beam_seconds(transcriber: Any, files: list[Path], tenant: str = "eval") -> float:
    """Wall time of the whole Beam transform on the files (DirectRunner, model already loaded in this process)."""
    import apache_beam as beam

    from memtape.connectors.sources.audio import read_audio
    from memtape.schemas.records import RawEvent
    from memtape.transforms.transcribe import TranscribeRecordings

    rows = [r.to_row() for f in files for r in read_audio(str(f), tenant) if isinstance(r, RawEvent) and r.attrs.get("media") == "recording"]
    for row in rows:
        row["attrs"] = json.dumps({**json.loads(row["attrs"]), "transcript": None})  # evaluate transcription even where captions exist
    began = time.perf_counter()
    with beam.Pipeline() as pipeline:
        _ = pipeline | beam.Create(rows) | TranscribeRecordings(transcriber.options)
    return time.perf_counter() - began


def compare_speed(files: list[Path], transcriber: Any, repeats: int = DEFAULT_REPEATS, tenant: str = "eval") -> dict[str, Any]:
    """Time the pipeline stage (connector row + ``Transcriber.rows``) and a bare faster-whisper call on each file.

    Same model object, same decoding settings, same process; file by file with
    the order alternating, so load from other processes hits both sides alike.
    Returns median real-time factors, CPU-time medians and each side's text per file.
    """
    from memtape.connectors.sources.audio import read_audio
    from memtape.schemas.records import RawEvent
    from memtape.transforms.transcribe import UTTERANCES_TAG

    bare, kwargs = transcriber.model, {**transcriber.options.decode_kwargs(), "language": transcriber.options.language}
    if transcriber.batch_size > 1:
        from faster_whisper import BatchedInferencePipeline

        bare, kwargs = BatchedInferencePipeline(transcriber.model), {**kwargs, "batch_size": transcriber.batch_size}
    durations: dict[Path, float] = {}

    def baseline(f: Path) -> str:
        segments, info = bare.transcribe(str(f), **kwargs)
        durations[f] = info.duration
        return " ".join(s.text.strip() for s in segments)

    def pipeline(f: Path) -> str:
        recording = next(r for r in read_audio(str(f), tenant) if isinstance(r, RawEvent))
        return " ".join(row["text"] for tag, row in transcriber.rows(recording.to_row()) if tag == UTTERANCES_TAG)

    baseline(files[0])  # warm-up: first-call allocations and page cache count for neither side
    sides = {"pipeline": pipeline, "baseline": baseline}
    wall: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    texts: dict[str, dict[Path, str]] = {name: {} for name in sides}
    for repeat in range(repeats):
        totals = {name: [0.0, 0.0] for name in sides}
        for index, f in enumerate(files):
            for name in list(sides) if (repeat + index) % 2 == 0 else list(sides)[::-1]:
                began, began_cpu = time.perf_counter(), time.process_time()
                texts[name][f] = sides[name](f)
                totals[name][0] += time.perf_counter() - began
                totals[name][1] += time.process_time() - began_cpu
        for name, (seconds, cpu_seconds) in totals.items():
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    audio_seconds = sum(durations.values())
    if not audio_seconds:
        raise UserError("the files decode to no audio at all: nothing to time")
    rtf = statistics.median(wall["pipeline"]) / audio_seconds
    base_rtf = statistics.median(wall["baseline"]) / audio_seconds
    return {
        "rtf": round(rtf, 4),
        "audio_seconds": round(audio_seconds, 3),
        "baseline": {"rtf": round(base_rtf, 4),
                     "call": f"{type(bare).__name__}.transcribe(path, {', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"},
        "rtf_ratio": round(rtf / base_rtf, 4),
        "cpu_ratio": round(statistics.median(cpu["pipeline"]) / statistics.median(cpu["baseline"]), 4),
        "repeats": repeats,
        "seconds": {name: [round(x, 3) for x in values] for name, values in wall.items()},
        "cpu_seconds": {name: [round(x, 3) for x in values] for name, values in cpu.items()},
        "device": transcriber.model.model.device,
        "compute_type": transcriber.model.model.compute_type,
        "batch_size": transcriber.batch_size,
        "texts": texts,
    }


def evaluate(audio_dir: Path, options: Any, repeats: int = DEFAULT_REPEATS, with_beam: bool = True, tenant: str = "eval") -> dict[str, Any]:
    """Transcribe every referenced file with the pipeline and with bare faster-whisper; WER and median RTFs."""
    from memtape.connectors.sources.audio import probe
    from memtape.transforms.transcribe import Transcriber

    refs, skipped = references(audio_dir), []
    for path in list(refs):
        try:
            probe(path)
        except Exception as exc:  # any PyAV failure means this file cannot be scored; the others still are
            skipped.append({"file": str(path), "error": f"{type(exc).__name__}: {exc}"})
            del refs[path]
    if not refs:
        raise UserError(f"{audio_dir}: no readable audio file with a reference transcript (name.txt or *.transcription)")
    files = list(refs)
    transcriber = Transcriber(options)
    speed = compare_speed(files, transcriber, repeats, tenant)
    texts = speed.pop("texts")
    speed["baseline"]["wer"] = round(_wer(refs, texts["baseline"]), 4)
    report: dict[str, Any] = {
        "wer": round(_wer(refs, texts["pipeline"]), 4),
        **speed,
        "files": len(files),
        "skipped": skipped,
        "model": options.model,
        "per_file": [{"file": f.name, "reference": " ".join(normalise(refs[f])), "hypothesis": texts["pipeline"][f]} for f in files],
    }
    if with_beam:
        seconds = beam_seconds(transcriber, files, tenant)
        report["beam"] = {"rtf": round(seconds / speed["audio_seconds"], 4), "seconds": round(seconds, 3),
                          "note": "whole Beam transform once on DirectRunner, pipeline start-up included"}
    return report


@click.command()
@click.option("--audio-dir", required=True, type=click.Path(path_type=Path), help="folder of audio files with reference transcripts beside them")
@click.option("--format", "fmt", type=click.Choice(["json", "text"]), default="text", show_default=True)
@click.option("--model", default=None, help="faster-whisper model name or directory [default: models.whisper from config]")
@click.option("--device", default=None, help="auto, cpu or cuda [default: models.device from config]")
@click.option("--compute-type", default="auto", show_default=True, help="auto: float16 on CUDA, int8 on CPU")
@click.option("--batch-size", type=int, default=None, help="batched inference size [default: 16 on CUDA, sequential on CPU]")
@click.option("--language", default=None, help="language code; detected per recording when omitted")
@click.option("--repeats", type=click.IntRange(1), default=DEFAULT_REPEATS, show_default=True, help="timed passes per side; RTFs are medians")
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True, help="CPU threads for CTranslate2 (0: its default)")
@click.option("--beam/--no-beam", "with_beam", default=True, show_default=True, help="also time the whole Beam transform once")
@click.option("--diarise/--no-diarise", default=True, show_default=True,
              help="the pipeline side labels speakers too, as it does in a backfill (off: transcription alone against bare faster-whisper)")
def command(audio_dir: Path, fmt: str, model: str | None, device: str | None, compute_type: str, batch_size: int | None,
            language: str | None, repeats: int, threads: int, with_beam: bool, diarise: bool) -> None:
    """Word error rate and real-time factor of transcription, against a bare faster-whisper baseline."""
    from memtape.config import load_config
    from memtape.transforms.transcribe import TranscribeOptions

    if not audio_dir.is_dir():
        raise UserError(f"{audio_dir}: no such folder")
    cfg = load_config()
    options = TranscribeOptions(model=model or cfg.models.whisper, device=device or cfg.models.device, compute_type=compute_type,
                                batch_size=batch_size, language=language, max_audio_seconds=cfg.limits.max_audio_seconds,
                                cpu_threads=threads, diarise=diarise)
    report = evaluate(audio_dir, options, repeats, with_beam)
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"WER {report['wer']:.3f} on {report['files']} files ({report['audio_seconds']:.1f} s of audio)")
    click.echo(f"RTF pipeline {report['rtf']:.3f}, bare faster-whisper {report['baseline']['rtf']:.3f} (ratio {report['rtf_ratio']:.3f})")
    if "beam" in report:
        click.echo(f"RTF whole Beam transform {report['beam']['rtf']:.3f}")
