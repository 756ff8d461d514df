"""``memtape eval diarisation``: who-spoke-when scored by time, the pipeline's speaker labels against bare VAD + clustering.

Every recording under ``--audio-dir`` with an RTTM reference beside it
(``name.rttm``) is transcribed by the pipeline's own ``Transcriber`` (its
utterances carry the speaker labels and millisecond spans that reach memories)
and diarised by the bare ``Diariser`` alone (VAD regions cut where the clustered
speaker changes). Both are scored by speaker purity and coverage by time and by
diarisation error rate. ``--build-from`` first writes a constructed set into
``--audio-dir``: alternating turns of the CMU cards speaker and one other real
speaker per recording, muxed into ``.mp4`` with a small generated video stream.
This module measures and builds test recordings; it writes no table.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import click
import numpy as np

from memtape.errors import UserError

SAMPLE_RATE = 16_000
DEFAULT_COLLAR_S = 0.25  # NIST md-eval's customary collar: boundary placement within 250 ms is not scored
FRAME_S = 0.01  # scoring resolution
TURN_GAP_S = 0.6  # silence between constructed turns: a short conversational pause
_TRIM_BELOW_PEAK_DB = 25.0  # a reference turn spans the clip's frames within this of its loudest frame
_VIDEO_SIZE = (160, 120)
_VIDEO_RATE = 5
_AUDIO_FRAME = 1024  # AAC's frame length
CARDS_SPEAKER = "cards"

Turn = tuple[float, float, str]


def load_clip(path: Path) -> np.ndarray:
    """A clip as mono float32 at 16 kHz."""
    from memtape.connectors.sources.audio import decode_windows

    return np.concatenate([window.channels[0] for window in decode_windows(path)])


def speech_span(audio: np.ndarray) -> tuple[float, float]:
    """Seconds from the first to the last 10 ms frame within ``_TRIM_BELOW_PEAK_DB`` of the loudest: the talker's turn without its lead-in silence."""
    frame = int(FRAME_S * SAMPLE_RATE)
    rms = np.sqrt(np.square(audio[: len(audio) // frame * frame].reshape(-1, frame)).mean(axis=1))
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (-_TRIM_BELOW_PEAK_DB / 20))
    return float(loud[0] * FRAME_S), float((loud[-1] + 1) * FRAME_S)


def halves_at_pause(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two turns from one clip, cut at the quietest 100 ms in its middle third, so both halves are real speech of that talker."""
    frame = int(0.1 * SAMPLE_RATE)
    third = len(audio) // 3
    middle = audio[third: 2 * third]
    rms = np.sqrt(np.square(middle[: len(middle) // frame * frame].reshape(-1, frame)).mean(axis=1))
    cut = third + int(rms.argmin()) * frame + frame // 2
    return audio[:cut], audio[cut:]


def write_meeting(turns: list[tuple[np.ndarray, str]], path: Path, gap_s: float = TURN_GAP_S) -> list[Turn]:
    """Mux ``turns`` (clip, speaker) one after another into a video file with an AAC track; returns the reference turns.

    The video stream is a few generated frames a second, enough for the file to be
    what a conference recorder writes: a video container whose audio must be found.
    """
    import av

    gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
    pieces, reference, at = [gap], [], len(gap)
    for clip, speaker in turns:
        start, end = speech_span(clip)
        reference.append((at / SAMPLE_RATE + start, at / SAMPLE_RATE + end, speaker))
        pieces += [clip.astype(np.float32), gap]
        at += len(clip) + len(gap)
    audio = np.concatenate(pieces)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=_VIDEO_RATE)
        video.width, video.height, video.pix_fmt = *_VIDEO_SIZE, "yuv420p"
        sound = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for index in range(int(len(audio) / SAMPLE_RATE * _VIDEO_RATE) + 1):
            shade = np.full((_VIDEO_SIZE[1], _VIDEO_SIZE[0], 3), (index * 8) % 256, dtype=np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(shade, format="rgb24")))
        for first in range(0, len(audio), _AUDIO_FRAME):
            chunk = audio[first: first + _AUDIO_FRAME]
            frame = av.AudioFrame.from_ndarray(np.pad(chunk, (0, _AUDIO_FRAME - len(chunk)))[None, :], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, first
            container.mux(sound.encode(frame))
        container.mux(video.encode(None))
        container.mux(sound.encode(None))
    return reference


def write_rttm(path: Path, reference: Iterable[Turn]) -> None:
    """NIST RTTM, one ``SPEAKER`` line per turn: the reference format diarisation tools read."""
    lines = [f"SPEAKER {path.stem} 1 {start:.3f} {end - start:.3f} <NA> <NA> {speaker} <NA> <NA>" for start, end, speaker in reference]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_rttm(path: Path) -> list[Turn]:
    turns = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        try:
            start, duration = float(fields[3]), float(fields[4])
            turns.append((start, start + duration, fields[7]))
        except (IndexError, ValueError) as exc:
            raise UserError(f"{path}:{number}: not an RTTM SPEAKER line ({exc})") from exc
    return turns


def construct_set(shared_audio: Path, out_dir: Path) -> list[Path]:
    """One recording per clip of ``voices/``: cards turns alternating with that voice's two halves, as ``.mp4`` + ``.rttm``."""
    cards = sorted((shared_audio / "cards").glob("*.wav"))
    voices = sorted((shared_audio / "voices").glob("*.wav"))
    if not cards or not voices:
        raise UserError(f"{shared_audio}: expected cards/*.wav and voices/*.wav (the shared CMU clips)")
    out_dir.mkdir(parents=True, exist_ok=True)
    card_audio = [load_clip(c) for c in cards]
    written = []
    for index, voice in enumerate(voices):
        first, second = halves_at_pause(load_clip(voice))
        pick = [card_audio[(index + k) % len(card_audio)] for k in range(3)]
        turns = [(pick[0], CARDS_SPEAKER), (first, voice.stem), (pick[1], CARDS_SPEAKER), (second, voice.stem), (pick[2], CARDS_SPEAKER)]
        path = out_dir / f"cards-{voice.stem}.mp4"
        write_rttm(path.with_suffix(".rttm"), write_meeting(turns, path))
        written.append(path)
    return written


def _frames(turns: Iterable[Turn], n: int) -> dict[str, np.ndarray]:
    """Per label, a boolean activity track of ``n`` 10 ms frames."""
    tracks: dict[str, np.ndarray] = {}
    for start, end, label in turns:
        track = tracks.setdefault(label, np.zeros(n, dtype=bool))
        track[int(round(start / FRAME_S)): int(round(end / FRAME_S))] = True
    return tracks


def score(reference: list[Turn], hypothesis: list[Turn], collar_s: float = DEFAULT_COLLAR_S) -> dict[str, Any]:
    """Purity, coverage and DER by time.

    DER = (missed + false alarm + confusion) / reference speech, after the
    one-to-one label mapping that maximises agreement (Hungarian), with
    ``collar_s`` either side of every reference boundary left unscored. Overlap
    is scored frame by frame (each overlapping reference speaker counts), as
    md-eval does; the constructed set has none. Purity: the share of
    hypothesised speech whose label's dominant reference speaker said it.
    Coverage: the share of reference speech whose speaker's dominant label covers it.
    """
    from scipy.optimize import linear_sum_assignment

    n = int(max([end for _, end, _ in reference + hypothesis] + [0]) / FRAME_S) + 2
    ref, hyp = _frames(reference, n), _frames(hypothesis, n)
    scored = np.ones(n, dtype=bool)
    collar = int(round(collar_s / FRAME_S))
    for start, end, _ in reference:
        for edge in (int(round(start / FRAME_S)), int(round(end / FRAME_S))):
            scored[max(0, edge - collar): edge + collar] = False
    ref_names, hyp_names = list(ref), list(hyp)
    overlap = np.array([[np.sum(ref[r] & hyp[h] & scored) for h in hyp_names] for r in ref_names]).reshape(len(ref_names), len(hyp_names))
    rows, cols = linear_sum_assignment(-overlap) if overlap.size else ([], [])
    n_ref = sum((t.astype(int) for t in ref.values()), np.zeros(n, int))
    n_hyp = sum((t.astype(int) for t in hyp.values()), np.zeros(n, int))
    correct = sum(((ref[ref_names[r]] & hyp[hyp_names[h]]).astype(int) for r, h in zip(rows, cols)), np.zeros(n, int))
    total = int(n_ref[scored].sum())
    missed = int(np.maximum(n_ref - n_hyp, 0)[scored].sum())
    false_alarm = int(np.maximum(n_hyp - n_ref, 0)[scored].sum())
    confusion = int((np.minimum(n_ref, n_hyp) - correct)[scored].sum())
    spoken = [(ref[r] & scored) for r in ref_names]
    heard = [(hyp[h] & scored) for h in hyp_names]
    in_speech = sum(int((h & (n_ref > 0)).sum()) for h in heard)
    return {
        "der": round((missed + false_alarm + confusion) / max(total, 1), 4),
        "missed": round(missed / max(total, 1), 4),
        "false_alarm": round(false_alarm / max(total, 1), 4),
        "confusion": round(confusion / max(total, 1), 4),
        "purity": round(float(overlap.max(axis=0).sum()) / max(in_speech, 1), 4) if overlap.size else 0.0,
        "coverage": round(float(overlap.max(axis=1).sum()) / max(int(sum(s.sum() for s in spoken)), 1), 4) if overlap.size else 0.0,
        "speakers": {"reference": len(ref_names), "hypothesis": len(hyp_names)},
        "scored_seconds": round(total * FRAME_S, 2),
    }


def pipeline_turns(transcriber: Any, path: Path, tenant: str = "eval") -> list[Turn]:
    """The utterances the pipeline makes of ``path``, as (start, end, speaker) by their millisecond spans."""
    from memtape.connectors.sources.audio import read_audio
    from memtape.schemas.records import RawEvent
    from memtape.transforms.transcribe import UTTERANCES_TAG

    recording = next(r for r in read_audio(str(path), tenant) if isinstance(r, RawEvent)).to_row()
    return [(row["start_ms"] / 1000, row["end_ms"] / 1000, row["speaker"])
            for tag, row in transcriber.rows(recording) if tag == UTTERANCES_TAG]


def baseline_turns(path: Path) -> list[Turn]:
    """Bare VAD + embedding clustering on the whole file: speech regions cut where the clustered speaker changes."""
    from memtape.transforms.diarise import Diariser, speaker_label

    diariser = Diariser()
    diariser.add(load_clip(path), 0.0)
    return [(start, end, speaker_label(speaker)) for start, end, speaker in diariser.finish().turns()]


def _pooled(scores: list[dict[str, Any]]) -> dict[str, float]:
    """Time-weighted averages over recordings (each score is a rate over that recording's scored seconds)."""
    weight = sum(s["scored_seconds"] for s in scores) or 1.0
    return {key: round(sum(s[key] * s["scored_seconds"] for s in scores) / weight, 4)
            for key in ("der", "missed", "false_alarm", "confusion", "purity", "coverage")}


def evaluate(audio_dir: Path, options: Any, collar_s: float = DEFAULT_COLLAR_S) -> dict[str, Any]:
    """Score the pipeline's utterance speakers and the bare diariser on every recording with an RTTM beside it."""
    from memtape.connectors.sources.audio import MEDIA_SUFFIXES
    from memtape.transforms.transcribe import Transcriber

    files = sorted(p for p in audio_dir.rglob("*") if p.suffix.lower() in MEDIA_SUFFIXES and p.with_suffix(".rttm").is_file())
    if not files:
        raise UserError(f"{audio_dir}: no recording with an RTTM reference beside it (name.rttm); --build-from makes a set")
    transcriber = Transcriber(options)
    per_file, pipeline_scores, baseline_scores = [], [], []
    for path in files:
        reference = read_rttm(path.with_suffix(".rttm"))
        pipeline_scores.append(score(reference, pipeline_turns(transcriber, path), collar_s))
        baseline_scores.append(score(reference, baseline_turns(path), collar_s))
        per_file.append({"file": path.name, "pipeline": pipeline_scores[-1], "baseline": baseline_scores[-1]})
    return {
        **_pooled(pipeline_scores),
        "baseline": {**_pooled(baseline_scores), "what": "bare VAD + speaker-embedding clustering, no transcription"},
        "collar_s": collar_s,
        "overlap": "scored frame by frame (each overlapping reference speaker counts); the constructed set has none",
        "files": len(files),
        "per_file": per_file,
    }


@click.command()
@click.option("--audio-dir", required=True, type=click.Path(path_type=Path), help="folder of recordings with name.rttm references beside them")
@click.option("--build-from", type=click.Path(path_type=Path), default=None,
              help="first write the constructed set into --audio-dir from this folder of shared CMU clips (cards/, voices/)")
@click.option("--collar", type=click.FloatRange(0), default=DEFAULT_COLLAR_S, show_default=True,
              help="seconds either side of each reference boundary left unscored")
@click.option("--format", "fmt", type=click.Choice(["json", "text"]), default="text", show_default=True)
@click.option("--model", default=None, help="faster-whisper model name or directory [default: models.whisper from config]")
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True, help="CPU threads for CTranslate2 (0: its default)")
def command(audio_dir: Path, build_from: Path | None, collar: float, fmt: str, model: str | None, threads: int) -> None:
    """Speaker purity, coverage and DER of the transcribed utterances' speakers, beside bare VAD + clustering."""
    from memtape.config import load_config
    from memtape.transforms.transcribe import TranscribeOptions

    if build_from is not None:
        construct_set(build_from, audio_dir)
    if not audio_dir.is_dir():
        raise UserError(f"{audio_dir}: no such folder")
    cfg = load_config()
    options = TranscribeOptions(model=model or cfg.models.whisper, device=cfg.models.device, cpu_threads=threads,
                                max_audio_seconds=cfg.limits.max_audio_seconds)
    report = evaluate(audio_dir, options, collar)
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
        return
    base = report["baseline"]
    click.echo(f"DER {report['der']:.3f} (collar {collar:g} s), purity {report['purity']:.3f}, coverage {report['coverage']:.3f} "
               f"on {report['files']} recordings")
    click.echo(f"bare VAD + clustering: DER {base['der']:.3f}, purity {base['purity']:.3f}, coverage {base['coverage']:.3f}")
