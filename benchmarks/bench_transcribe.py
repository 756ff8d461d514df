"""Transcription speed: the pipeline stage against a bare faster-whisper call on one long recording, plus decode memory.

Usage: python benchmarks/bench_transcribe.py [--audio FILE ...] [--minutes 1] [--repeats 3] [--threads 2]
       [--window-s 300] [--device auto] [--compute-type auto] [--batch-size N] [--diarisation [--shared-audio DIR]]
Without --audio it builds a meeting of about --minutes from the repo's speech
fixtures. Prints one JSON object: median real-time factors of both sides (same
model, same process, alternating order) and their ratio, and the peak memory of
streaming the audio in windows versus decoding it whole as faster-whisper does,
and the wall time of one run of the whole Beam transform.
With --diarisation it times instead the pipeline with speaker diarisation on
against transcription alone (same model, same process, alternating order) on
the constructed two-speaker .mp4 set built from the shared CMU clips.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np

from memtape.connectors.sources.audio import DEFAULT_WINDOW_SECONDS, SAMPLE_RATE, decode_windows
from memtape.evals.diarisation import construct_set
from memtape.evals.transcription import DEFAULT_REPEATS, beam_seconds, compare_speed
from memtape.transforms.transcribe import TranscribeOptions, Transcriber

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "audio"
SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "data" / "audio"
SPEECH = [FIXTURES / "standup" / "standup.wav", FIXTURES / "call" / "call.flac"]
GAP_SECONDS = 1.0


def synthetic_meeting(minutes: float, folder: Path) -> Path:
    """A mono 16 kHz wav of the fixture speech repeated with pauses until it lasts ``minutes``."""
    import av

    clips = [np.mean(next(iter(decode_windows(p, stereo=False))).channels, axis=0) for p in SPEECH]
    gap = np.zeros(int(GAP_SECONDS * SAMPLE_RATE), dtype=np.float32)
    parts, total, index = [], 0, 0
    while total < minutes * 60 * SAMPLE_RATE:
        parts += [clips[index % len(clips)], gap]
        total += len(parts[-2]) + len(gap)
        index += 1
    audio = np.concatenate(parts)[None, :]
    path = folder / "meeting.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(audio, format="fltp", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for chunk in av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE).resample(frame):
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def decode_peak_mb(path: Path, window_s: float) -> dict[str, float]:
    """Peak Python-heap memory (numpy included) of streaming windows versus faster-whisper's whole-file decode."""
    from faster_whisper.audio import decode_audio

    peaks = {}
    for name, run in (("windows", lambda: sum(w.seconds for w in decode_windows(path, window_s=window_s))),
                      ("whole_file", lambda: decode_audio(str(path)).shape)):
        tracemalloc.start()
        run()
        peaks[name] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
    return peaks


def diarisation_overhead(files: list[Path], options: TranscribeOptions, repeats: int) -> dict[str, object]:
    """Median RTF of ``Transcriber.rows`` with diarisation on and off over ``files``, alternating which goes first."""
    from memtape.connectors.sources.audio import probe, read_audio
    from memtape.schemas.records import RawEvent

    sides = {"diarised": Transcriber(dataclasses.replace(options, diarise=True)),
             "transcription_only": Transcriber(dataclasses.replace(options, diarise=False))}
    rows = [next(r for r in read_audio(str(f), "bench") if isinstance(r, RawEvent)).to_row() for f in files]
    audio_seconds = sum(probe(f).duration_s or 0.0 for f in files)
    for transcriber in sides.values():  # warm-up: first-call allocations count for neither side
        list(transcriber.rows(rows[0]))
    wall: dict[str, list[float]] = {name: [] for name in sides}
    speakers: dict[str, set[str]] = {name: set() for name in sides}
    for repeat in range(repeats):
        for name in list(sides) if repeat % 2 == 0 else list(sides)[::-1]:
            began = time.perf_counter()
            for row in rows:
                speakers[name] |= {r.get("speaker") for _, r in sides[name].rows(row) if "speaker" in r}
            wall[name].append(time.perf_counter() - began)
    rtf = {name: statistics.median(seconds) / audio_seconds for name, seconds in wall.items()}
    return {"rtf_diarised": round(rtf["diarised"], 4), "rtf_transcription_only": round(rtf["transcription_only"], 4),
            "ratio": round(rtf["diarised"] / rtf["transcription_only"], 4), "audio_seconds": round(audio_seconds, 2),
            "files": [f.name for f in files], "repeats": repeats, "seconds": {k: [round(x, 2) for x in v] for k, v in wall.items()},
            "speaker_labels": {k: sorted(v) for k, v in speakers.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", nargs="*", type=Path, default=None)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--window-s", type=float, default=DEFAULT_WINDOW_SECONDS)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compute-type", default="auto")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--diarisation", action="store_true", help="time diarisation on against transcription alone")
    parser.add_argument("--shared-audio", type=Path, default=SHARED_AUDIO, help="the shared CMU clips (cards/, voices/)")
    args = parser.parse_args()
    options = TranscribeOptions(device=args.device, compute_type=args.compute_type, batch_size=args.batch_size,
                                window_s=args.window_s, cpu_threads=args.threads)
    if args.diarisation:
        with tempfile.TemporaryDirectory() as tmp:
            files = args.audio or construct_set(args.shared_audio, Path(tmp))
            print(json.dumps(diarisation_overhead(files, options, args.repeats), indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        files = args.audio or [synthetic_meeting(args.minutes, Path(tmp))]
        transcriber = Transcriber(options)
        report = compare_speed(files, transcriber, args.repeats)
        report.pop("texts")
        seconds = beam_seconds(transcriber, files)
        report["beam"] = {"rtf": round(seconds / report["audio_seconds"], 4), "seconds": round(seconds, 3),
                          "note": "whole Beam transform once on DirectRunner, pipeline start-up included"}
        report.update(window_s=args.window_s, threads=args.threads, files=[str(f) if args.audio else f.name for f in files],
                      decode_peak_mb=decode_peak_mb(files[0], args.window_s))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
