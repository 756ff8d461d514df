"""Embedding stage: fill the 384-dim ``embedding`` and ``piece_embeddings`` columns of memories with the offline MiniLM
(or, where ``[models] memory_vectors = "static"``, its distilled static token vectors).

Beam's ``RunInference`` batches the rows and keeps one model per worker,
loaded through ``memtape.transforms.encode.memory_encoder`` on the device it picks
(GPU when present), and encodes with ``memtape.transforms.encode``, as recall
encodes its queries, through the process's cache of vectors (a piece whose text
this process encoded before costs nothing). This module never writes tables and never reaches a model hub.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, RunInference

from memtape.schemas.records import memory_pieces
from memtape.transforms.encode import embed_texts, memory_encoder, memory_text
from memtape.transforms.models import DEFAULT_EMBEDDING_MODEL, limit_model_threads

MAX_BATCH_SIZE = 256


class _MiniLMHandler(ModelHandler[dict, dict, Any]):
    """RunInference handler: the shared memory encoder in, memory rows with embeddings out."""

    def __init__(self, model_name: str, device: str | None, batch_size: int | None, threads: int | None) -> None:
        super().__init__()
        self._model_name = model_name
        self._device = device
        self._batch_size = batch_size
        self._threads = threads

    def load_model(self) -> Any:
        limit_model_threads(self._threads)
        return memory_encoder(self._model_name, self._device)

    def run_inference(self, batch: Sequence[dict], model: Any, inference_args: dict | None = None) -> Iterable[dict]:
        pieces = [memory_pieces(row["text"]) for row in batch]
        texts = [memory_text(row) for row in batch] + [p for ps in pieces for p in ps]
        vectors = embed_texts(texts, model, self._batch_size, cached=True)
        out, at = [], len(batch)
        for row, vector, ps in zip(batch, vectors, pieces):
            out.append({**row, "embedding": vector.tolist(), "piece_embeddings": vectors[at:at + len(ps)].tolist()})
            at += len(ps)
        return out

    def batch_elements_kwargs(self) -> dict[str, int]:
        """Batches of ``MAX_BATCH_SIZE`` rows, or a bundle's whole rows when fewer: Beam's adaptive batching starts at one row
        and doubles, so a stream's close of 20 memories made 13 encode calls of a few texts each (1.8x the CPU of one)."""
        return {"min_batch_size": MAX_BATCH_SIZE, "max_batch_size": MAX_BATCH_SIZE}


class EmbedMemories(beam.PTransform):
    """MEMORIES rows -> the same rows with ``embedding`` and ``piece_embeddings`` filled (384 float32, unit length).

    ``threads`` caps torch's threads in each worker process (``limit_model_threads``)."""

    def __init__(self, model_name: str = DEFAULT_EMBEDDING_MODEL, device: str | None = None, batch_size: int | None = None,
                 threads: int | None = None) -> None:
        super().__init__()
        self._handler = _MiniLMHandler(model_name, device, batch_size, threads)

    def expand(self, memories):
        return memories | "EmbedWithMiniLM" >> RunInference(self._handler)
