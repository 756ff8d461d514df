"""Who spoke when in a single-track recording: voice activity, speaker embeddings, clustering per recording.

Silero VAD (the v6 ONNX model faster-whisper already ships) finds the speech;
the GE2E speaker encoder whose weights the ``resemblyzer`` package ships embeds
overlapping 1.6 s slices of it; average-linkage clustering on cosine distance
groups the slices of the whole recording into speakers. Labels are "speaker 1",
"speaker 2", ... in order of first appearance, so they are stable within a
recording and never names. A ``Diariser`` takes a recording window by window
(memory stays near one window plus 1 KB per slice) and clusters once at the end.
This module labels time spans; it never transcribes, decodes files or writes.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np

from memtape.errors import UserError

SAMPLE_RATE = 16_000
SPEAKER = "speaker"
SLICE_FRAMES = 160  # 1.6 s of 10 ms mel frames: the encoder's training partial; shorter slices embed worse
SLICE_HOP_FRAMES = 40  # a speaker change is placed to within 0.4 s; halving it doubles the encoder's work
# Cosine distance at which two groups of slices stop being merged; measured on the CMU voices set (BENCHMARKS.md).
CLUSTER_DISTANCE = 0.4
MIN_SPEAKER_SLICES = 2  # a "speaker" heard in one slice alone is a cough or a cross-talk blend: folded into the nearest
MAX_CLUSTERED_SLICES = 4000  # ~27 minutes of speech; beyond it a strided sample is clustered and the rest join the nearest centroid
SMOOTHING_SLICES = 3  # majority over neighbouring slices of one speech region: a lone slice cannot flip the speaker mid-sentence
_VAD_MIN_SILENCE_MS = 300  # a turn boundary in conversation is rarely shorter
_VAD_PAD_MS = 100
_TARGET_DBFS = -30.0  # the level the encoder was trained at
_MEL_BANDS = 40
_MEL_WINDOW = 400  # 25 ms
_MEL_HOP = 160  # 10 ms
_ENCODER_PACKAGE = "resemblyzer"
_ENCODER_WEIGHTS = "pretrained.pt"
_LOCK = threading.Lock()


def speaker_label(index: int) -> str:
    return f"{SPEAKER} {index + 1}"


def speech_regions(audio: np.ndarray) -> list[tuple[int, int]]:
    """Sample spans of speech found by Silero VAD, padded a little so word edges stay inside."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=_VAD_MIN_SILENCE_MS, speech_pad_ms=_VAD_PAD_MS)
    return [(span["start"], span["end"]) for span in get_speech_timestamps(audio, options, SAMPLE_RATE)]


def _encoder_weights() -> Path:
    spec = importlib.util.find_spec(_ENCODER_PACKAGE)  # located, not imported: its __init__ needs pkg_resources for a VAD we do not use
    if spec is None or not spec.submodule_search_locations:
        raise UserError("speaker diarisation needs package resemblyzer: pip install 'memtape[audio]', or turn diarisation off")
    return Path(next(iter(spec.submodule_search_locations))) / _ENCODER_WEIGHTS


@functools.lru_cache(maxsize=None)
def _load_encoder() -> Any:
    import torch

    class SpeakerEncoder(torch.nn.Module):
        """GE2E: three LSTM layers over 40 mel bands, the last state through a linear layer, L2-normalised."""

        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(_MEL_BANDS, 256, 3, batch_first=True)
            self.linear = torch.nn.Linear(256, 256)

        def forward(self, mels: torch.Tensor) -> torch.Tensor:
            _, (hidden, _) = self.lstm(mels)
            embedding = torch.relu(self.linear(hidden[-1]))
            return embedding / torch.linalg.vector_norm(embedding, dim=1, keepdim=True).clamp_min(1e-5)

    state = torch.load(_encoder_weights(), map_location="cpu", weights_only=True)["model_state"]
    encoder = SpeakerEncoder()
    encoder.load_state_dict({k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))})
    return encoder.eval()


def speaker_encoder() -> Any:
    """The speaker encoder, loaded once per process from the installed package (never a download)."""
    with _LOCK:
        return _load_encoder()


@functools.lru_cache(maxsize=1)
def _mel_filters() -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=_MEL_WINDOW, n_mels=_MEL_BANDS).astype(np.float32)


def mel_frames(audio: np.ndarray) -> np.ndarray:
    """Power mel spectrogram (frames x 40, 10 ms apart) of 16 kHz audio, first brought to the encoder's training level."""
    rms = float(np.sqrt(np.square(audio).mean())) if len(audio) else 0.0
    audio = audio * (10 ** (_TARGET_DBFS / 20) / max(rms, 1e-6))
    padded = np.pad(audio, _MEL_WINDOW // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, _MEL_WINDOW)[::_MEL_HOP]
    window = np.hanning(_MEL_WINDOW + 1)[:-1].astype(np.float32)
    power = np.square(np.abs(np.fft.rfft(frames * window, axis=1))).astype(np.float32)
    return power @ _mel_filters().T


def embed_mels(slices: np.ndarray, batch: int = 64) -> np.ndarray:
    """One unit-length 256-d speaker embedding per ``SLICE_FRAMES`` x 40 mel slice."""
    import torch

    encoder = speaker_encoder()
    out = []
    with torch.inference_mode():
        for i in range(0, len(slices), batch):
            out.append(encoder(torch.from_numpy(np.ascontiguousarray(slices[i:i + batch]))).numpy())
    return np.concatenate(out) if out else np.zeros((0, 256), np.float32)


def _slice_starts(frames: int) -> list[int]:
    """Frame offsets of the slices covering a region; the last slice ends at the region's end."""
    if frames <= SLICE_FRAMES:
        return [0]
    starts = list(range(0, frames - SLICE_FRAMES + 1, SLICE_HOP_FRAMES))
    return starts + ([frames - SLICE_FRAMES] if starts[-1] != frames - SLICE_FRAMES else [])


@dataclasses.dataclass(frozen=True)
class SpeakerTurns:
    """Slice centres (seconds into the recording) with a speaker index and a speech region each, in time order."""

    centres_s: np.ndarray
    speakers: np.ndarray
    region_of: np.ndarray
    regions_s: np.ndarray  # (start, end) seconds of each speech region, one row each

    def speaker_at(self, start_s: float, end_s: float) -> int | None:
        """The speaker heard most over ``[start_s, end_s]``, judged only by slices of the speech region nearest its middle.

        Turns mostly change at pauses, so a word at the edge of a region is not
        given the speaker of a slice across the pause. Among that region's slices:
        the majority of those centred in the span, else the nearest one.
        """
        if not len(self.centres_s):
            return None
        middle = (start_s + end_s) / 2
        starts, ends = self.regions_s[:, 0], self.regions_s[:, 1]
        region = int(np.maximum(0.0, np.maximum(starts - middle, middle - ends)).argmin())
        first, last = np.searchsorted(self.region_of, [region, region + 1])  # slices are in region order, at least one each
        centres, speakers = self.centres_s[first:last], self.speakers[first:last]
        inside = speakers[(centres >= start_s) & (centres <= end_s)]
        if len(inside):
            return int(np.bincount(inside).argmax())
        return int(speakers[np.abs(centres - middle).argmin()])

    def turns(self) -> list[tuple[float, float, int]]:
        """``(start_s, end_s, speaker)`` runs over the speech regions: the bare VAD + clustering answer."""
        runs: list[tuple[float, float, int]] = []
        for index, (start, end) in enumerate(self.regions_s.tolist()):
            cut = start
            inside = np.flatnonzero(self.region_of == index)
            for here, after in zip(inside, list(inside[1:]) + [None]):
                speaker = int(self.speakers[here])
                if after is not None and int(self.speakers[after]) == speaker:
                    continue
                until = end if after is None else min(end, max(cut, (self.centres_s[here] + self.centres_s[after]) / 2))
                if until > cut:
                    runs.append((cut, until, speaker))
                cut = until
        return runs


def _cluster(embeddings: np.ndarray) -> np.ndarray:
    """Speaker index per slice: average-linkage on cosine distance, a strided sample when there are very many."""
    from sklearn.cluster import AgglomerativeClustering

    if len(embeddings) < 2:
        return np.zeros(len(embeddings), dtype=np.int64)
    stride = -(-len(embeddings) // MAX_CLUSTERED_SLICES)
    sample = embeddings[::stride]
    labels = AgglomerativeClustering(n_clusters=None, distance_threshold=CLUSTER_DISTANCE, metric="cosine",
                                     linkage="average").fit_predict(sample) if len(sample) > 1 else np.zeros(1, np.int64)
    return _nearest_centroid(embeddings, sample, labels)


def _nearest_centroid(embeddings: np.ndarray, sample: np.ndarray, labels: np.ndarray) -> np.ndarray:
    centroids = np.stack([sample[labels == k].mean(axis=0) for k in range(labels.max() + 1)])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True).clip(1e-6)
    return (embeddings @ centroids.T).argmax(axis=1)


def _fold_rare(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Speakers heard in fewer than ``MIN_SPEAKER_SLICES`` slices join the nearest speaker that is not rare."""
    counts = np.bincount(labels)
    kept = np.flatnonzero(counts >= MIN_SPEAKER_SLICES)
    if len(kept) == 0 or len(kept) == len(counts):
        return labels
    keep = np.isin(labels, kept)
    folded = kept[_nearest_centroid(embeddings, embeddings[keep], np.searchsorted(kept, labels[keep]))]
    return np.where(keep, labels, folded)


def _smooth(labels: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Majority label over ``SMOOTHING_SLICES`` neighbours in the same speech region; a tie keeps the slice's own."""
    half = SMOOTHING_SLICES // 2
    smoothed = labels.copy()
    for i in range(len(labels)):
        around = labels[max(0, i - half): i + half + 1][regions[max(0, i - half): i + half + 1] == regions[i]]
        counts = np.bincount(around)
        if counts[labels[i]] < counts.max():
            smoothed[i] = counts.argmax()
    return smoothed


def _first_appearance(labels: np.ndarray) -> np.ndarray:
    order = list(dict.fromkeys(labels.tolist()))
    return np.array([order.index(k) for k in labels.tolist()], dtype=np.int64)


class Diariser:
    """Collects speech slices and their embeddings window by window; ``finish`` clusters the whole recording."""

    def __init__(self) -> None:
        self._centres: list[np.ndarray] = []
        self._region_of: list[np.ndarray] = []
        self._embeddings: list[np.ndarray] = []
        self._regions: list[tuple[float, float]] = []

    def add(self, audio: np.ndarray, offset_s: float) -> None:
        """Find the speech in one mono window starting ``offset_s`` into the recording and embed its slices."""
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        slices, centres, region_of = [], [], []
        for start, end in speech_regions(audio):
            self._regions.append((offset_s + start / SAMPLE_RATE, offset_s + end / SAMPLE_RATE))
            mels = mel_frames(audio[start:end])
            frames = len(mels)
            if frames < SLICE_FRAMES:  # a short region is embedded whole, repeated up to the slice length
                mels = np.resize(mels, (SLICE_FRAMES, mels.shape[1]))
            for first in _slice_starts(frames):
                slices.append(mels[first:first + SLICE_FRAMES])
                middle = frames / 2 if frames <= SLICE_FRAMES else first + SLICE_FRAMES / 2
                centres.append(offset_s + (start + middle * _MEL_HOP) / SAMPLE_RATE)
                region_of.append(len(self._regions) - 1)
        if slices:
            self._centres.append(np.array(centres))
            self._region_of.append(np.array(region_of))
            self._embeddings.append(embed_mels(np.stack(slices)))

    def finish(self) -> SpeakerTurns:
        """Cluster every slice of the recording; speaker indices in order of first appearance."""
        if not self._centres:
            return SpeakerTurns(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 2)))
        centres, embeddings, region_of = (np.concatenate(self._centres), np.concatenate(self._embeddings),
                                          np.concatenate(self._region_of))
        labels = _first_appearance(_smooth(_fold_rare(embeddings, _cluster(embeddings)), region_of))
        return SpeakerTurns(centres, labels, region_of, np.array(self._regions).reshape(-1, 2))
