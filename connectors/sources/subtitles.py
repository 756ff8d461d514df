"""Parse WebVTT and SRT transcripts into timed cues, streaming line by line.

Meeting tools export captions beside a recording; the audio connector reads
them so a recording that already has a transcript is never transcribed again.
A cue keeps the speaker only when the file itself names it: a WebVTT ``<v Name>``
voice span (Teams), or a ``Name: `` prefix on every cue of the file (Zoom's
transcript); a prefix on some cues only is text, and nothing is guessed. A malformed cue is reported and skipped, the
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
_NAME_PREFIX = re.compile(r"^(?P<name>[^:<>]{1,60}?): (?P<text>\S.*)$", re.S)  # Zoom: "Ana Ruiz: Good morning."
_MAX_NAME_WORDS = 5  # "Dr. Ana María Ruiz López" fits; a longer run before a colon is a sentence, not a name
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


def _name_prefix(text: str) -> re.Match[str] | None:
    match = _NAME_PREFIX.match(text)
    return match if match and len(match["name"].split()) <= _MAX_NAME_WORDS else None


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


def parse_cues(lines: Iterable[str], prefixed_speakers: bool = False) -> Iterator[Cue | BadCue]:
    """Cues of a WebVTT or SRT text in file order; both formats share the block shape.

    With ``prefixed_speakers`` a cue's leading ``Name: `` is its speaker, not its text.
    """
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
        if prefixed_speakers and speaker is None and (match := _name_prefix(text)):
            text, speaker = match["text"], match["name"].strip()
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


def _every_cue_named(path: Path, encoding: str) -> bool:
    """True when every cue without a voice span starts with a short ``Name: ``: a transcript that names its speakers."""
    seen = False
    with path.open(encoding=encoding, errors="replace") as handle:
        for cue in parse_cues(handle):
            if isinstance(cue, Cue) and cue.speaker is None:
                if _name_prefix(cue.text) is None:
                    return False
                seen = True
    return seen


def read_cues(path: Path) -> Iterator[Cue | BadCue]:
    """The cues of a transcript file in order, streamed, UTF-8 or else Windows-1252."""
    encoding = _encoding(path)
    prefixed = _every_cue_named(path, encoding)
    with path.open(encoding=encoding, errors="replace") as handle:
        yield from parse_cues(handle, prefixed)


def sidecar_transcript(recording: Path) -> Path | None:
    """The transcript beside ``recording``: ``name.vtt``/``name.srt``, else one language-tagged ``name.en.vtt``."""
    for suffix in SUBTITLE_SUFFIXES:
        candidate = recording.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    tagged = sorted(p for suffix in SUBTITLE_SUFFIXES for p in recording.parent.glob(f"{glob.escape(recording.stem)}.*{suffix}"))
    return tagged[0] if tagged else None
