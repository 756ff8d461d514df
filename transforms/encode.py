"""Encode texts as unit-length vectors: the one path memories, the segmenter and recall queries share.

Memories (in the Beam embedding stage) and queries (on the recall path) must be
embedded the same way, or their similarities would compare different things,
so both ask ``memory_encoder`` for the encoder ``[models] memory_vectors``
names: MiniLM (the default) or its distilled static token vectors. The
segmenter encodes every message with the same MiniLM through ``embed_texts``,
and pipeline stages may share a bounded per-process cache keyed by model and
text, so a text a stage of this process encoded before costs nothing the
second time. This module imports no Beam, so a recall process never pays for
loading it. It never writes tables and never reaches a model hub.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from contextlib import nullcontext
from typing import Any, ContextManager, Sequence

import numpy as np

from memtape.transforms.models import DEFAULT_EMBEDDING_MODEL, embedder

MEMORY_VECTORS = ("minilm", "static")
CPU_BATCH_SIZE = 64
GPU_BATCH_SIZE = 256  # on an H200, float16: 3,053 and 2,700 texts/s against 2,662 and 2,516 at 64 (BENCHMARKS.md)
LENGTH_GROUP_RATIO = 2.0  # texts encoded in one batch differ in length at most this many times (padding)
TRUNCATED_CHARS = 1200  # about the model's 256 word pieces: longer texts are cut to the same length
CACHED_VECTORS = 20_000  # per process: 384 float32 and a 16-byte key each, about 31 MB: a few runs' messages
_cache: OrderedDict[tuple[int, bytes], tuple[np.ndarray, bool]] = OrderedDict()  # (model, text) -> (vector, exact)
_cache_lock = threading.Lock()


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


def bfloat16_pays() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AMX tiles): there MiniLM in bfloat16 takes 0.4x the
    CPU of float32, each vector within 1.6e-3 of float32's (cosine >= 0.9999); elsewhere bfloat16 is emulated and slower."""
    import torch

    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def _precision(model: Any, exact: bool) -> ContextManager[Any]:
    """bfloat16 matrix products where they pay and ``exact`` is off; a GPU model keeps its own precision (float16)."""
    import torch

    if exact or model.device.type != "cpu" or not bfloat16_pays():
        return nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _encode(texts: Sequence[str], model: Any, batch_size: int | None, exact: bool) -> np.ndarray:
    from memtape.transforms.static_embed import StaticEmbeddings

    if isinstance(model, StaticEmbeddings):
        return model.encode(list(texts))
    batch_size = batch_size or (GPU_BATCH_SIZE if model.device.type == "cuda" else CPU_BATCH_SIZE)
    rows: list[np.ndarray] = [np.empty(0, dtype=np.float32)] * len(texts)
    for group in _length_groups(texts):
        with _precision(model, exact):
            encoded = model.encode([texts[i] for i in group], batch_size=batch_size, convert_to_tensor=True,
                                   show_progress_bar=False)
        for i, vector in zip(group, encoded.float().cpu().numpy()):
            rows[i] = vector
    vectors = np.stack(rows) if rows else np.zeros((0, model.get_sentence_embedding_dimension() or 0), dtype=np.float32)
    # Normalised here, in float32: a float16 or bfloat16 model would otherwise leave the lengths off by about 1e-3.
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _length_groups(texts: Sequence[str]) -> list[list[int]]:
    """Indexes of ``texts`` in groups whose lengths differ at most ``LENGTH_GROUP_RATIO`` times, shortest first.

    The model pads each batch to its longest text, and a batch is cut from one call's texts: a memory's text
    (up to the model's 256 word pieces) encoded in one call with its short pieces made the whole batch pay 256.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    groups: list[list[int]] = []
    floor = 0
    for i in order:
        n = max(1, min(len(texts[i]), TRUNCATED_CHARS))
        if not groups or n > LENGTH_GROUP_RATIO * floor:
            groups.append([])
            floor = n
        groups[-1].append(i)
    return groups


def forget_vectors() -> None:
    """Empty this process's cache, so a benchmark's next repeat encodes every text again."""
    with _cache_lock:
        _cache.clear()


def _cache_key(model: Any, text: str) -> tuple[int, bytes]:
    return id(model), hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def embed_texts(texts: Sequence[str], model: Any | None = None, batch_size: int | None = None,
                exact: bool = False, cached: bool = False) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text; batches of ``batch_size`` texts, by default the size that
    suits the model's device. ``model`` defaults to ``memory_encoder()``.

    ``exact`` keeps float32 on a CPU where bfloat16 would pay (``bfloat16_pays``): a vector then depends on the
    other texts of its batch by float32 rounding only (about 2e-7), where bfloat16 moves it by up to 1.6e-3.
    ``cached`` reads and fills this process's cache (the last ``CACHED_VECTORS`` texts); an exact vector
    serves any request, a bfloat16 one only an inexact request. Benchmarks that time repeats leave it off.
    """
    model = model or memory_encoder()
    if not cached or not texts:
        return _encode(texts, model, batch_size, exact)
    keys = [_cache_key(model, t) for t in texts]
    found: dict[tuple[int, bytes], np.ndarray] = {}
    with _cache_lock:
        for key in keys:
            if key in _cache and (_cache[key][1] or not exact):
                found[key] = _cache[key][0]
                _cache.move_to_end(key)
    missing = {k: t for k, t in zip(keys, texts) if k not in found}
    if missing:
        found.update(zip(missing, _encode(list(missing.values()), model, batch_size, exact)))
        with _cache_lock:
            for key in missing:
                _cache[key] = (found[key].copy(), exact)  # a copy: a row would keep its whole batch alive
                _cache.move_to_end(key)
            while len(_cache) > CACHED_VECTORS:
                _cache.popitem(last=False)
    return np.stack([found[k] for k in keys])
