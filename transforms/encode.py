"""Encode texts as unit-length vectors: the one function memories and recall queries share.

Memories (in the Beam embedding stage) and queries (on the recall path) must be
embedded the same way, or their similarities would compare different things,
so both ask ``memory_encoder`` for the encoder ``[models] memory_vectors``
names: MiniLM (the default) or its distilled static token vectors. This module
imports no Beam, so a recall process never pays for loading it. It never
writes tables and never reaches a model hub.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from memtape.transforms.models import DEFAULT_EMBEDDING_MODEL, embedder

MEMORY_VECTORS = ("minilm", "static")
CPU_BATCH_SIZE = 64
GPU_BATCH_SIZE = 256  # on an H200, float16: 3,053 and 2,700 texts/s against 2,662 and 2,516 at 64 (BENCHMARKS.md)


def memory_text(row: dict) -> str:
    """What a memory is embedded as: its header line, then its text, so recall matches who/when/where as well as content."""
    return "\n".join(part for part in (row.get("header"), row.get("text")) if part)


def memory_encoder(name: str = DEFAULT_EMBEDDING_MODEL, device: str | None = None) -> Any:
    """The encoder of memory vectors and queries that the configuration names: the sentence model ``name``,
    or (``memory_vectors = "static"``) its distilled static token vectors."""
    from memtape.config import load_config

    kind = load_config().models.memory_vectors
    if kind not in MEMORY_VECTORS:
        raise ValueError(f"[models] memory_vectors is {kind!r}; expected one of {', '.join(MEMORY_VECTORS)}")
    if kind == "static":
        from memtape.transforms.static_embed import static_embeddings

        return static_embeddings(None if name == DEFAULT_EMBEDDING_MODEL else name)
    return embedder(name, device)


def embed_texts(texts: Sequence[str], model: Any | None = None, batch_size: int | None = None) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text, whatever precision the model computes in; batches of
    ``batch_size`` texts, by default the size that suits the model's device. ``model`` defaults to ``memory_encoder()``."""
    from memtape.transforms.static_embed import StaticEmbeddings

    model = model or memory_encoder()
    if isinstance(model, StaticEmbeddings):
        return model.encode(list(texts))
    batch_size = batch_size or (GPU_BATCH_SIZE if model.device.type == "cuda" else CPU_BATCH_SIZE)
    # Normalised here, in float32: a float16 model on a GPU would otherwise leave the lengths off by about 1e-3.
    vectors = np.asarray(model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
