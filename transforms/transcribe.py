"""Transcribe meeting recordings into ``utterances`` with faster-whisper.

``TranscribeRecordings`` takes ``raw_events`` rows, keeps the recordings that
have no sidecar transcript, and streams each file in bounded windows through a
Whisper model loaded once per worker (word timestamps, VAD; batched on GPU).
Stereo recordings whose channels carry different talkers are split by channel
("unknown speaker 1", "unknown speaker 2"); any other recording is diarised
(``transforms.diarise``) and each turn is cut where the speaker changes, labelled
"speaker 1", "speaker 2", ... in order of first appearance, never given names.
Utterances keep their millisecond span into the file. A file that cannot be read
(or a video without an audio track) becomes a ``dead_letters`` row and the run goes on.
``utterance_unit`` turns an utterance into a ``raw_events``-shaped unit for the
chat path. This module reads audio and emits rows; it never writes a table.
"""
from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator

import apache_beam as beam
import numpy as np

from memtape.config import LimitsConfig
from memtape.connectors.sources.audio import (
    DEFAULT_WINDOW_SECONDS, SAMPLE_RATE, RecordingTooLong, Window, decode_windows, probe, uri_path,
)
from memtape.schemas.records import DeadLetter, content_hash, stable_id, utcnow
from memtape.transforms.diarise import Diariser, SpeakerTurns, speaker_encoder, speaker_label
from memtape.transforms.whisper_model import PACKAGED_BASE, whisper_device, whisper_model

UTTERANCES_TAG = "utterances"
DEAD_LETTERS_TAG = "dead_letters"
STAGE = "transcribe"
SOURCE = "audio"
GPU_BATCH_SIZE = 16  # 30 s chunks per forward pass; fits the base..large models in 16 GB at float16
BEAM_SIZE = 5  # faster-whisper's default: the WER it documents
TURN_PAUSE_SECONDS = 1.0  # silence inside a Whisper segment long enough to start a new turn
LANGUAGE_LOCK_PROBABILITY = 0.5  # once a window is this sure of the language, later windows skip detection
_FRAME_SECONDS = 0.1
_ACTIVE_RMS = 0.01  # about -40 dBFS: quieter frames are room noise, not speech
_DOMINANCE_RATIO = 4.0  # 12 dB: one channel this much louder than the other is a talker on their own line
_SEPARATE_SHARE = 0.6  # share of active frames with one dominant channel for a stereo file to count as two lines
_MIN_ACTIVE_FRAMES = 10  # fewer than this (1 s of speech) is too little to judge the channels by
MONO_SPEAKER = "unknown speaker"


def channel_speaker(channel: int) -> str:
    return f"{MONO_SPEAKER} {channel + 1}"


@dataclasses.dataclass(frozen=True)
class TranscribeOptions:
    """How recordings are transcribed; ``auto`` picks CUDA float16 with batching when a GPU is present, else CPU int8."""

    model: str = PACKAGED_BASE
    device: str = "auto"
    compute_type: str = "auto"
    batch_size: int | None = None  # None: GPU_BATCH_SIZE on CUDA, sequential on CPU
    beam_size: int = BEAM_SIZE
    language: str | None = None
    window_s: float = DEFAULT_WINDOW_SECONDS
    max_audio_seconds: float = LimitsConfig.max_audio_seconds
    cpu_threads: int = 0  # 0: CTranslate2's default
    diarise: bool = True  # label who speaks in single-track recordings; off: every turn is "unknown speaker"

    def resolved_batch_size(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return GPU_BATCH_SIZE if whisper_device(self.device) == "cuda" else 1

    def decode_kwargs(self) -> dict[str, Any]:
        """The faster-whisper arguments every transcription call shares (the eval's baseline uses them too)."""
        return {"beam_size": self.beam_size, "word_timestamps": True, "vad_filter": True}


def needs_transcription(event: dict[str, Any]) -> bool:
    """A meeting recording row from the audio connector without a sidecar transcript."""
    attrs = _attrs(event)
    return event.get("source_kind") == "meeting" and bool(event.get("media_ref")) \
        and attrs.get("media") == "recording" and not attrs.get("transcript")


def closes_recording(event: dict[str, Any]) -> bool:
    """A row after which nothing more joins its recording's conversation.

    That is a recording this run transcribes (every utterance comes from it) or
    the last cue of a recording's sidecar transcript.
    """
    return needs_transcription(event) or (event.get("source_kind") == "meeting" and _attrs(event).get("last_cue") is True)


def channels_are_separate(left: np.ndarray, right: np.ndarray) -> bool | None:
    """True when each channel carries its own talker (a call recorded per line), False when both hear the same room.

    Judged on short frames where anyone speaks: on a per-line recording one
    channel dominates most of them; a room mic in stereo (or mono saved twice)
    has both channels at similar levels. None while there is too little speech to tell.
    """
    frame = int(_FRAME_SECONDS * SAMPLE_RATE)
    n = min(len(left), len(right)) // frame * frame
    rms = np.sqrt(np.square(np.stack([left[:n], right[:n]]).reshape(2, -1, frame)).mean(axis=2))
    active = rms.max(axis=0) >= _ACTIVE_RMS
    if active.sum() < _MIN_ACTIVE_FRAMES:
        return None
    louder, quieter = rms.max(axis=0)[active], rms.min(axis=0)[active]
    return float(np.mean(louder >= _DOMINANCE_RATIO * np.maximum(quieter, 1e-6))) >= _SEPARATE_SHARE


def _attrs(event: dict[str, Any]) -> dict[str, Any]:
    attrs = event.get("attrs")
    if isinstance(attrs, str):
        try:
            return json.loads(attrs)
        except ValueError:
            return {}
    return attrs or {}


def _start_time(event: dict[str, Any]) -> datetime | None:
    when = event.get("event_time")
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    if isinstance(when, datetime) and when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _turns(segment: Any) -> list[list[Any]]:
    """A Whisper segment's words cut wherever the speaker pauses for ``TURN_PAUSE_SECONDS`` or more."""
    words = list(segment.words or [])
    turns: list[list[Any]] = [words[:1]] if words else []
    for prev, word in zip(words, words[1:]):
        if word.start - prev.end >= TURN_PAUSE_SECONDS:
            turns.append([])
        turns[-1].append(word)
    return turns


@dataclasses.dataclass
class _Draft:
    """An utterance before it has its place (seq) in the recording; ``spoken`` keeps each word as Whisper spaced it."""

    start_s: float
    end_s: float
    text: str
    words: list[dict[str, Any]]
    confidence: float
    speaker: str
    language: str | None = None
    spoken: list[str] = dataclasses.field(default_factory=list)


def _draft_of_words(words: list[Any], offset_s: float, speaker: str) -> _Draft | None:
    text = "".join(w.word for w in words).strip()
    if not text:
        return None
    rows = [{"word": w.word.strip(), "start_ms": _ms(offset_s + w.start), "end_ms": _ms(offset_s + w.end),
             "probability": float(w.probability)} for w in words]
    return _Draft(offset_s + words[0].start, offset_s + words[-1].end, text, rows,
                  float(np.mean([w.probability for w in words])), speaker, spoken=[w.word for w in words])


def _drafts(segment: Any, offset_s: float, speaker: str) -> Iterator[_Draft]:
    turns = _turns(segment)
    if not turns:
        if segment.text.strip():
            yield _Draft(offset_s + segment.start, offset_s + segment.end, segment.text.strip(), [],
                         math.exp(segment.avg_logprob), speaker)
        return
    for turn in turns:
        if (draft := _draft_of_words(turn, offset_s, speaker)) is not None:
            yield draft


def split_by_speaker(draft: _Draft, turns: SpeakerTurns) -> list[_Draft]:
    """A turn cut wherever the diarised speaker changes between its words, each part labelled with its speaker.

    A turn without word timings takes the speaker heard most over its span.
    With no speech found by the diariser the turn keeps its label.
    """
    if not draft.spoken:
        speaker = turns.speaker_at(draft.start_s, draft.end_s)
        return [dataclasses.replace(draft, speaker=speaker_label(speaker) if speaker is not None else draft.speaker)]
    parts: list[_Draft] = []
    for word, spoken in zip(draft.words, draft.spoken):
        speaker = turns.speaker_at(word["start_ms"] / 1000, word["end_ms"] / 1000)
        label = speaker_label(speaker) if speaker is not None else draft.speaker
        if parts and parts[-1].speaker == label:
            last = parts[-1]
            last.words.append(word)
            last.spoken.append(spoken)
            last.end_s = word["end_ms"] / 1000
        else:
            parts.append(_Draft(word["start_ms"] / 1000, word["end_ms"] / 1000, "", [word], 0.0, label, draft.language, [spoken]))
    for part in parts:
        part.text = "".join(part.spoken).strip()
        part.confidence = float(np.mean([w["probability"] for w in part.words]))
    parts[0].start_s, parts[-1].end_s = draft.start_s, draft.end_s
    return [part for part in parts if part.text]


class Transcriber:
    """A loaded Whisper model with its options: turns one recording row into utterance and dead-letter rows.

    Beam's DoFn and the evaluation both call ``rows``, so what is measured is what runs.
    """

    def __init__(self, options: TranscribeOptions | None = None) -> None:
        self.options = options or TranscribeOptions()
        self.model = whisper_model(self.options.model, self.options.device, self.options.compute_type, self.options.cpu_threads)
        self.batch_size = self.options.resolved_batch_size()
        if self.options.diarise:
            speaker_encoder()  # loaded with the model, once per worker, so a missing package fails before any file
        self._batched = None
        if self.batch_size > 1:
            from faster_whisper import BatchedInferencePipeline

            self._batched = BatchedInferencePipeline(self.model)

    def _segments(self, audio: np.ndarray, language: str | None) -> tuple[Iterable[Any], Any]:
        kwargs = {**self.options.decode_kwargs(), "language": language}
        if self._batched is not None:
            return self._batched.transcribe(audio, batch_size=self.batch_size, **kwargs)
        return self.model.transcribe(audio, **kwargs)

    def _window_drafts(self, window: Window, separate: bool, language: str | None,
                       diariser: Diariser | None) -> tuple[list[_Draft], str | None, float]:
        """Drafts of one window in time order, the language heard and how sure the model is of it.

        A single track also goes to ``diariser``, which labels the drafts once the whole recording is in.
        """
        tracks = window.channels if separate else (window.channels[0] if len(window.channels) == 1 else np.mean(window.channels, axis=0),)
        if diariser is not None and not separate:
            diariser.add(tracks[0], window.offset_s)
        drafts: list[_Draft] = []
        heard, certainty = language, 1.0
        for channel, audio in enumerate(tracks):
            speaker = channel_speaker(channel) if separate else MONO_SPEAKER
            segments, info = self._segments(np.ascontiguousarray(audio, dtype=np.float32), language)
            for segment in segments:
                drafts.extend(_drafts(segment, window.offset_s, speaker))
            heard, certainty = info.language, info.language_probability
        for draft in drafts:
            draft.language = heard
        drafts.sort(key=lambda d: (d.start_s, d.speaker))
        return drafts, heard, certainty

    def rows(self, recording: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(tag, row)`` pairs: utterances in time order, then a dead letter if the file failed or ran past the limit.

        Utterances come once the recording is read through (speakers are clustered
        over all of it); those before a failure still come, then the dead letter.
        """
        tenant, recording_id = recording["tenant"], recording["event_id"]
        start = _start_time(recording)
        position, failure = 0.0, None
        language = self.options.language
        drafts: list[_Draft] = []
        diariser = Diariser() if self.options.diarise else None
        separate: bool | None = None
        try:
            path = uri_path(recording["media_ref"])
            channels = _attrs(recording).get("channels") or probe(path).channels
            decoded = False
            for window in decode_windows(path, channels == 2, self.options.window_s, self.options.max_audio_seconds):
                decoded = True
                if channels == 2 and separate is None:
                    separate = channels_are_separate(*window.channels)
                window_drafts, heard, certainty = self._window_drafts(window, bool(separate), language, diariser)
                if self.options.language is None and window_drafts and certainty >= LANGUAGE_LOCK_PROBABILITY:
                    language = heard
                drafts.extend(window_drafts)
                position = window.offset_s + window.seconds
            if not decoded:
                raise ValueError("no audio samples could be decoded")
        except RecordingTooLong as exc:
            failure = str(exc)
        except Exception as exc:  # a damaged file raises from PyAV, numpy or CTranslate2; all go to dead letters
            failure = f"unreadable audio: {type(exc).__name__}: {exc}"
        if diariser is not None and not separate and drafts:
            turns = diariser.finish()
            drafts = [part for draft in drafts for part in split_by_speaker(draft, turns)]
        for seq, draft in enumerate(drafts):
            yield UTTERANCES_TAG, _utterance_row(tenant, recording_id, seq, draft, start)
        if failure is not None:
            yield DEAD_LETTERS_TAG, _dead_letter(recording, failure, position)


def _utterance_row(tenant: str, recording_id: str, seq: int, draft: _Draft, start: datetime | None) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "utterance_id": stable_id(tenant, recording_id, seq),
        "recording_event_id": recording_id,
        "seq": seq,
        "start_ms": _ms(draft.start_s),
        "end_ms": _ms(draft.end_s),
        "text": draft.text,
        "words": draft.words,
        "confidence": draft.confidence,
        "language": draft.language,
        "speaker": draft.speaker,
        "event_time": start + timedelta(seconds=draft.start_s) if start else None,
    }


def _dead_letter(recording: dict[str, Any], error: str, position_s: float) -> dict[str, Any]:
    return DeadLetter(
        recording["tenant"], SOURCE, STAGE, error,
        position=f"{recording.get('media_ref')}#t={position_s:g}",
        source_uri=recording.get("source_uri"),
    ).to_row()


def utterance_unit(utterance: dict[str, Any]) -> dict[str, Any]:
    """A ``raw_events``-shaped unit for the segmenter: one turn of a meeting read like one chat message.

    ``event_id`` is the utterance id, the conversation is the recording and the
    sender is the speaker label, so episodes and memories trace back to the utterance.
    """
    when = utterance.get("event_time")
    return {
        "tenant": utterance["tenant"],
        "event_id": utterance["utterance_id"],
        "source_kind": "meeting",
        "source": SOURCE,
        "source_uri": None,
        "source_id": f"{utterance['recording_event_id']}#{utterance['seq']}",
        "conversation_id": utterance["recording_event_id"],
        "sender": utterance.get("speaker"),
        "recipients": [],
        "event_time": when,
        "tz_offset_minutes": None,
        "ingest_time": utcnow(),
        "text": utterance.get("text"),
        "media_ref": None,
        "payload": None,
        "attrs": json.dumps({"start_ms": utterance["start_ms"], "end_ms": utterance["end_ms"],
                             "confidence": utterance.get("confidence"), "language": utterance.get("language")}),
        "content_hash": content_hash(utterance.get("text")),
    }


class _TranscribeFn(beam.DoFn):
    def __init__(self, options: TranscribeOptions) -> None:
        self._options = options
        self._transcriber: Transcriber | None = None
        self._recordings = beam.metrics.Metrics.counter(STAGE, "recordings")
        self._utterances = beam.metrics.Metrics.counter(STAGE, "utterances")
        self._failures = beam.metrics.Metrics.counter(STAGE, "dead_letters")

    def setup(self) -> None:
        self._transcriber = Transcriber(self._options)

    def process(self, recording: dict[str, Any]) -> Iterator[Any]:
        self._recordings.inc()
        assert self._transcriber is not None  # made in setup()
        for tag, row in self._transcriber.rows(recording):
            if tag == UTTERANCES_TAG:
                self._utterances.inc()
                yield row
            else:
                self._failures.inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS_TAG, row)


class TranscribeRecordings(beam.PTransform):
    """``raw_events`` rows in; ``utterances`` (main output) and ``dead_letters`` out, one Whisper model per worker."""

    def __init__(self, options: TranscribeOptions | None = None) -> None:
        super().__init__()
        self.options = options or TranscribeOptions()

    def expand(self, events: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (
            events
            | "KeepRecordingsWithoutTranscript" >> beam.Filter(needs_transcription)
            | "TranscribeInWindows" >> beam.ParDo(_TranscribeFn(self.options)).with_outputs(DEAD_LETTERS_TAG, main=UTTERANCES_TAG)
        )


class UtterancesAsUnits(beam.PTransform):
    """``utterances`` rows in, ``raw_events``-shaped units out, ready for the same segmenter as chat."""

    def expand(self, utterances: beam.PCollection) -> beam.PCollection:
        return utterances | "UtteranceToUnit" >> beam.Map(utterance_unit)
