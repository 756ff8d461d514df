"""Meeting recordings connector (``audio:PATH``, a file or a folder) and the audio reader behind it.

Each recording (wav, flac, mp3, m4a, ogg, opus, or the audio track of a video
file: mp4, mkv, mov, avi, webm) becomes one ``raw_events``
row of kind ``meeting`` that points at the file by URI (the bytes stay where
they are), timed and titled from a sidecar JSON (``name.json``: title,
participants, start time), else the file's tags, else its modification time
(the end of the recording, so the start is that less its length).
A sidecar WebVTT/SRT transcript adds one row per cue, so the recording needs no
transcription. ``decode_windows`` streams the audio in bounded windows for the
transcription transform. This module reads files only; it never transcribes or writes.
"""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from memtape.connectors.base import Record, SourceError, register
from memtape.connectors.sources._common import limits, outside_folder
from memtape.connectors.sources.subtitles import BadCue, read_cues, sidecar_transcript
from memtape.schemas.records import DeadLetter, RawEvent, stable_id

_SCHEME = "audio"
_KIND = "meeting"
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm"})  # conference recorders' containers: only the audio track is read
MEDIA_SUFFIXES = AUDIO_SUFFIXES | VIDEO_SUFFIXES
SAMPLE_RATE = 16_000  # what Whisper's feature extractor expects
DEFAULT_WINDOW_SECONDS = 300  # ~19 MB of float32 per channel: long meetings never sit in memory whole
_CUT_SEARCH_SECONDS = 10  # a window ends at the quietest moment of its last seconds (at most its last quarter), not mid-word
_CUT_FRAME_SECONDS = 0.05
_DECODE_FORMAT = "s16p"  # 16-bit like faster-whisper's own decoder, so both hand the model the same samples
_S16_SCALE = 32768.0
_TIME_KEYS = ("start_time", "start", "started_at", "date", "time")
_TAG_TIME_KEYS = ("creation_time", "date", "DATE", "com.apple.quicktime.creationdate")
_EARLIEST_PLAUSIBLE = datetime(1980, 1, 1, tzinfo=timezone.utc)  # before portable digital recorders
_FUTURE_SLACK = timedelta(days=1)
_MAX_METADATA_BYTES = 1_000_000  # meeting metadata is a few hundred bytes; anything this big is not metadata


class RecordingTooLong(Exception):
    """Raised after the last window inside the limit, so the audio before it still counts."""


class NoAudioTrack(ValueError):
    """A container with no audio stream: a screen recording without sound, or a still-image video."""


@dataclasses.dataclass(frozen=True)
class Probe:
    """What the container says about a recording without decoding it."""

    duration_s: float | None
    channels: int
    sample_rate: int
    codec: str
    tags: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Window:
    """A stretch of a recording at ``SAMPLE_RATE``: one float32 array per decoded channel."""

    offset_s: float
    channels: tuple[np.ndarray, ...]

    @property
    def seconds(self) -> float:
        return self.channels[0].shape[0] / SAMPLE_RATE


def file_uri(path: str | Path) -> str:
    return Path(path).resolve().as_uri()


def uri_path(uri: str) -> Path:
    """The local path of a ``file://`` media reference (a media fragment ``#t=`` is dropped)."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme not in ("file", ""):
        raise ValueError(f"not a local file reference: {uri}")
    return Path(unquote(parsed.path))


def probe(path: Path) -> Probe:
    """Duration, channels, codec and tags from the container header; raises on unreadable files."""
    import av

    with av.open(str(path), metadata_errors="ignore") as container:
        if not container.streams.audio:
            kinds: list[str] = sorted({s.type for s in container.streams}) or ["no streams"]
            raise NoAudioTrack(f"no audio track (the file holds {', '.join(kinds)}): nothing to transcribe")
        stream = container.streams.audio[0]
        if not stream.channels or not stream.rate:
            raise ValueError("audio stream without channels or sample rate (empty or truncated file)")
        duration = None
        if container.duration:
            duration = container.duration / av.time_base
        elif stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        tags = {**dict(stream.metadata), **dict(container.metadata)}
        return Probe(duration, stream.channels, stream.rate, stream.codec_context.name, tags)


def _quiet_cut(mono: np.ndarray, latest: int) -> int:
    """Index of the quietest short frame in the seconds before ``latest``: where a window can end without splitting a word."""
    frame = int(_CUT_FRAME_SECONDS * SAMPLE_RATE)
    earliest = latest - min(_CUT_SEARCH_SECONDS * SAMPLE_RATE, latest // 4)
    span = mono[earliest:latest]
    frames = span[: len(span) // frame * frame].reshape(-1, frame)
    if not len(frames):
        return latest
    return earliest + int(np.argmin(np.square(frames).mean(axis=1))) * frame + frame // 2


def _decoded_frames(container: Any, stream: Any) -> Iterator[Any]:
    """Decoded frames, skipping packets the decoder rejects (a damaged stretch, not a damaged file), then ``None``.

    The final ``None`` tells the resampler to hand back the samples it still holds.
    """
    import av

    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            continue
    yield None


def decode_windows(path: Path, stereo: bool = False, window_s: float = DEFAULT_WINDOW_SECONDS,
                   max_seconds: float | None = None) -> Iterator[Window]:
    """Stream ``path`` as windows of at most ``window_s`` seconds at 16 kHz, mono or as two channels.

    Memory stays near one window whatever the recording's length. Raises
    ``RecordingTooLong`` after the windows inside ``max_seconds`` when the audio goes on past it.
    """
    import av

    window_n = int(window_s * SAMPLE_RATE)
    limit_n = int(max_seconds * SAMPLE_RATE) if max_seconds else None
    resampler = av.AudioResampler(format=_DECODE_FORMAT, layout="stereo" if stereo else "mono", rate=SAMPLE_RATE)
    pending: list[np.ndarray] = []
    pending_n = offset_n = 0
    with av.open(str(path), metadata_errors="ignore") as container:
        for frame in _decoded_frames(container, container.streams.audio[0]):
            for out in resampler.resample(frame):
                pending.append(out.to_ndarray().astype(np.float32) / _S16_SCALE)
                pending_n += pending[-1].shape[1]
            if limit_n is not None and offset_n + pending_n > limit_n:
                audio = np.concatenate(pending, axis=1)[:, : limit_n - offset_n]
                if audio.shape[1]:
                    yield Window(offset_n / SAMPLE_RATE, tuple(audio))
                raise RecordingTooLong(f"recording longer than the limit of {max_seconds:g} s; kept the first {max_seconds:g} s")
            while pending_n >= window_n:
                audio = np.concatenate(pending, axis=1)
                cut = _quiet_cut(audio.mean(axis=0), window_n)
                yield Window(offset_n / SAMPLE_RATE, tuple(audio[:, :cut]))
                offset_n += cut
                pending, pending_n = [audio[:, cut:]], audio.shape[1] - cut
    if pending_n:
        yield Window(offset_n / SAMPLE_RATE, tuple(np.concatenate(pending, axis=1)))


def _files(path: str) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        return sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in MEDIA_SUFFIXES)
    if p.is_file():
        return [p]
    raise SourceError(f"{path}: no such file or folder")


def _parse_time(value: object) -> datetime | None:
    """An aware datetime from ISO 8601 or epoch seconds; naive times are read as UTC; implausible ones are dropped."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        when = datetime.fromtimestamp(value, timezone.utc)
    elif isinstance(value, str) and len(value.strip()) > 4:  # a bare year is too coarse to place a meeting
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
    else:
        return None
    if not _EARLIEST_PLAUSIBLE <= when <= datetime.now(timezone.utc) + _FUTURE_SLACK:
        return None
    return when


def _sidecar_metadata(file: Path) -> tuple[dict[str, Any], str | None, Path | None]:
    """The meeting metadata JSON beside ``file`` (``name.json`` or ``name.wav.json``) and its text."""
    for candidate in (file.with_suffix(".json"), file.with_name(file.name + ".json")):
        if candidate.is_file():
            if candidate.stat().st_size > _MAX_METADATA_BYTES:
                raise ValueError(f"metadata file larger than {_MAX_METADATA_BYTES} bytes")
            text = candidate.read_text(encoding="utf-8")
            meta = json.loads(text)
            if not isinstance(meta, dict):
                raise ValueError("metadata is not a JSON object")
            return meta, text, candidate
    return {}, None, None


def _participants(meta: dict[str, Any]) -> list[str]:
    people = meta.get("participants") or meta.get("attendees") or []
    names = []
    for person in people if isinstance(people, list) else [people]:
        if isinstance(person, dict):
            person = person.get("name") or person.get("email")
        if person:
            names.append(str(person))
    return names


def _start_time(meta: dict[str, Any], tags: dict[str, str], file: Path, duration_s: float | None) -> tuple[datetime, str]:
    """When the recording began: the sidecar's time, else the container's tags, else its last write less its length."""
    for key in _TIME_KEYS:
        if (when := _parse_time(meta.get(key))) is not None:
            return when, "sidecar"
    for key in _TAG_TIME_KEYS:
        if (when := _parse_time(tags.get(key))) is not None:
            return when, "tags"
    ended = datetime.fromtimestamp(file.stat().st_mtime, timezone.utc)  # a recorder's last write is the recording's end
    return ended - timedelta(seconds=duration_s or 0.0), "mtime"


def _dead(tenant: str, error: Exception | str, position: Path) -> DeadLetter:
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return DeadLetter(tenant, _SCHEME, "connector", message, position=str(position))


def _cue_events(recording: RawEvent, transcript: Path, start: datetime) -> Iterator[Record]:
    """One row per cue; the last says so (``attrs.last_cue``), since nothing more will join the recording."""
    last: RawEvent | None = None
    for record in _cue_records(recording, transcript, start):
        if isinstance(record, RawEvent):
            held, last = last, record
            if held is None:
                continue
            record = held
        yield record
    if last is not None:
        last.attrs["last_cue"] = True
        yield last


def _cue_records(recording: RawEvent, transcript: Path, start: datetime) -> Iterator[Record]:
    uri = file_uri(transcript)
    max_bytes = limits().max_message_bytes
    for cue in read_cues(transcript):
        if isinstance(cue, BadCue):
            yield DeadLetter(recording.tenant, _SCHEME, "connector", cue.error, position=f"{transcript}:{cue.line}",
                             raw=cue.raw.encode("utf-8", "replace"))
            continue
        if len(cue.text.encode("utf-8", "replace")) > max_bytes:
            yield DeadLetter(recording.tenant, _SCHEME, "connector.limit", f"cue text exceeds max_message_bytes ({max_bytes})",
                             position=f"{transcript}#{cue.index}", raw=cue.text[:1024].encode("utf-8", "replace"))
            continue
        yield RawEvent(
            tenant=recording.tenant,
            source_kind=_KIND,
            source=_SCHEME,
            source_id=f"{uri}#{cue.index}",
            text=cue.text,
            event_time=start + timedelta(milliseconds=cue.start_ms),
            conversation_id=recording.event_id,
            sender=cue.speaker,
            recipients=list(recording.recipients),
            media_ref=f"{recording.media_ref}#t={cue.start_ms / 1000:g},{cue.end_ms / 1000:g}",
            attrs={"media": "cue", "start_ms": cue.start_ms, "end_ms": cue.end_ms, "transcript": str(transcript)},
        )


def _recording_records(file: Path, tenant: str) -> Iterator[Record]:
    try:
        info = probe(file)
    except NoAudioTrack as exc:
        yield _dead(tenant, str(exc), file)
        return
    except Exception as exc:  # PyAV raises a dozen error types for "not audio"; every one means skip this file
        yield _dead(tenant, f"unreadable audio: {type(exc).__name__}: {exc}", file)
        return
    try:
        meta, meta_text, meta_path = _sidecar_metadata(file)
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        yield _dead(tenant, exc, file.with_suffix(".json"))
        meta, meta_text, meta_path = {}, None, None
    start, time_source = _start_time(meta, info.tags, file, info.duration_s)
    transcript = sidecar_transcript(file)
    uri = file_uri(file)
    participants = _participants(meta)
    recording = RawEvent(
        tenant=tenant,
        source_kind=_KIND,
        source=_SCHEME,
        source_id=uri,
        text=None,
        event_time=start,
        recipients=participants,
        media_ref=uri,
        payload=meta_text,
        attrs={
            "media": "recording",
            "title": str(meta.get("title") or info.tags.get("title") or file.stem),
            "participants": participants,
            "duration_s": info.duration_s,
            "channels": info.channels,
            "sample_rate": info.sample_rate,
            "codec": info.codec,
            "event_time_source": time_source,
            "metadata": str(meta_path) if meta_path else None,
            "transcript": str(transcript) if transcript else None,
        },
    )
    recording.conversation_id = recording.event_id
    yield recording
    if transcript is not None:
        try:
            yield from _cue_events(recording, transcript, start)
        except OSError as exc:
            yield _dead(tenant, exc, transcript)


@register(_SCHEME, _KIND, "meeting recordings (wav, flac, mp3, m4a, ogg; mp4, mkv, mov, avi, webm video) with sidecar JSON/VTT/SRT")
def read_audio(path: str, tenant: str) -> Iterator[Record]:
    for file in _files(path):
        why = outside_folder(file, Path(path))
        if why:
            yield _dead(tenant, why, file)
            continue
        try:
            yield from _recording_records(file, tenant)
        except Exception as exc:  # one recording, whatever it holds, must not stop the folder
            yield _dead(tenant, exc, file)


def recording_id(tenant: str, path: str | Path) -> str:
    """The ``event_id`` the connector gives the recording at ``path``, for callers that only have the file."""
    return stable_id(tenant, _SCHEME, file_uri(path))
