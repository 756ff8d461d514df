"""Encode texts as unit-length MiniLM vectors: the one function memories and recall queries share.

Memories (in the Beam embedding stage) and queries (on the recall path) must be
embedded the same way, or their similarities would compare different things.
This module imports no Beam, so a recall process never pays for loading it. It
never writes tables and never reaches a model hub.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from memtape.transforms.models import embedder

CPU_BATCH_SIZE = 64
GPU_BATCH_SIZE = 256  # on an H200, float16: 3,053 and 2,700 texts/s against 2,662 and 2,516 at 64 (BENCHMARKS.md)


def memory_text(row: dict) -> str:
    """What a memory is embedded as: its header line, then its text, so recall matches who/when/where as well as content."""
    return "\n".join(part for part in (row.get("header"), row.get("text")) if part)


def embed_texts(texts: Sequence[str], model: Any | None = None, batch_size: int | None = None) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text, whatever precision the model computes in; batches of
    ``batch_size`` texts, by default the size that suits the model's device."""
    model = model or embedder()
    batch_size = batch_size or (GPU_BATCH_SIZE if model.device.type == "cuda" else CPU_BATCH_SIZE)
    # Normalised here, in float32: a float16 model on a GPU would otherwise leave the lengths off by about 1e-3.
    vectors = np.asarray(model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
