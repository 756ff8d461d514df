"""Parse WebVTT and SRT transcripts into timed cues, streaming line by line.

Meeting tools export captions beside a recording; the audio connector reads
them so a recording that already has a transcript is never transcribed again.
A cue keeps the speaker only when the file itself names it (a WebVTT ``<v Name>``
voice span); nothing is guessed. A malformed cue is reported and skipped, the
cues around it still come through. This module parses text only: no audio, no records.
"""
from __future__ import annotations

import codecs
import dataclasses
import glob
import html
import re
from pathlib import Path
from typing import Iterable, Iterator

SUBTITLE_SUFFIXES = (".vtt", ".srt")
_TIMING = re.compile(
    r"^\s*(?P<start>(?:\d+:)?\d{1,2}:\d{2}[.,]\d{1,3})\s*-->\s*(?P<end>(?:\d+:)?\d{1,2}:\d{2}[.,]\d{1,3})"
)
_VOICE = re.compile(r"<v(?:\.[\w.-]+)?\s+([^>]+)>")
_TAG = re.compile(r"</?[^>]+>")
_VTT_BLOCKS_WITHOUT_CUES = ("NOTE", "STYLE", "REGION")
_FALLBACK_ENCODING = "cp1252"  # what Windows caption tools write when they do not write UTF-8
_CHECK_BLOCK_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class Cue:
    """One caption: its place in the file, its time span and its plain text."""

    index: int
    start_ms: int
    end_ms: int
    text: str
    speaker: str | None = None


@dataclasses.dataclass(frozen=True)
class BadCue:
    """A block that looked like a cue but could not be read, with the line it started on."""

    line: int
    error: str
    raw: str


def timestamp_ms(stamp: str) -> int:
    """``01:02:03.456``, ``02:03,456`` or ``1:02:03.4`` as milliseconds."""
    clock, _, fraction = stamp.replace(",", ".").partition(".")
    fields = [int(f) for f in clock.split(":")]
    if len(fields) == 2:
        fields.insert(0, 0)
    hours, minutes, seconds = fields
    if minutes > 59 or seconds > 59:
        raise ValueError(f"timestamp out of range: {stamp}")
    return ((hours * 60 + minutes) * 60 + seconds) * 1000 + int(fraction.ljust(3, "0")[:3])


def _plain(lines: list[str]) -> tuple[str, str | None]:
    """Text without markup, and the voice span's speaker when the cue names one."""
    joined = "\n".join(lines)
    voice = _VOICE.search(joined)
    text = html.unescape(_TAG.sub("", joined))
    return " ".join(text.split()), (voice.group(1).strip() if voice else None)


def _blocks(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """Blank-line separated blocks with the 1-based line each starts on."""
    block: list[str] = []
    start = 0
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r\n").lstrip("\ufeff")
        if line.strip():
            if not block:
                start = lineno
            block.append(line)
        elif block:
            yield start, block
            block = []
    if block:
        yield start, block


def parse_cues(lines: Iterable[str]) -> Iterator[Cue | BadCue]:
    """Cues of a WebVTT or SRT text in file order; both formats share the block shape."""
    index = 0
    for start, block in _blocks(lines):
        head = block[0].strip()
        if head.startswith("WEBVTT") or head.split(" ", 1)[0] in _VTT_BLOCKS_WITHOUT_CUES:
            continue
        timing_at = next((i for i, line in enumerate(block[:2]) if "-->" in line), None)
        if timing_at is None:
            yield BadCue(start, "no timing line (expected 'start --> end')", "\n".join(block))
            continue
        match = _TIMING.match(block[timing_at])
        try:
            if match is None:
                raise ValueError(f"unreadable timing line: {block[timing_at].strip()!r}")
            start_ms, end_ms = timestamp_ms(match["start"]), timestamp_ms(match["end"])
            if end_ms < start_ms:
                raise ValueError("cue ends before it starts")
        except ValueError as exc:
            yield BadCue(start + timing_at, str(exc), "\n".join(block))
            continue
        text, speaker = _plain(block[timing_at + 1:])
        if text:
            yield Cue(index, start_ms, end_ms, text, speaker)
            index += 1


def _encoding(path: Path) -> str:
    """``utf-8-sig`` when the whole file decodes as UTF-8, else Windows-1252; checked in blocks, never read whole."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with path.open("rb") as handle:
            while block := handle.read(_CHECK_BLOCK_BYTES):
                decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return _FALLBACK_ENCODING
    return "utf-8-sig"


def read_cues(path: Path) -> Iterator[Cue | BadCue]:
    """The cues of a transcript file in order, streamed, UTF-8 or else Windows-1252."""
    with path.open(encoding=_encoding(path), errors="replace") as handle:
        yield from parse_cues(handle)


def sidecar_transcript(recording: Path) -> Path | None:
    """The transcript beside ``recording``: ``name.vtt``/``name.srt``, else one language-tagged ``name.en.vtt``."""
    for suffix in SUBTITLE_SUFFIXES:
        candidate = recording.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    tagged = sorted(p for suffix in SUBTITLE_SUFFIXES for p in recording.parent.glob(f"{glob.escape(recording.stem)}.*{suffix}"))
    return tagged[0] if tagged else None
