"""Cheap per-unit vectors for segmentation: static token embeddings distilled from the packaged MiniLM.

MiniLM encodes about a hundred chat turns a second on two cores, too slow to
embed every message at stream rates just to find boundaries. As model2vec
does, each vocabulary token is run once through MiniLM on its own
(``[CLS] token [SEP]``); its output vector, with the common directions
removed, becomes a fixed lookup row, and a unit is the weighted sum of its
tokens' rows. The distillation takes about 15 s and is cached on disk under
the memtape cache folder. This module only builds and reads those vectors; it
never downloads anything and never touches the store.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from memtape.schemas.records import stable_id

if TYPE_CHECKING:
    from tokenizers import Tokenizer

DISTILL_BATCH = 2048
COMMON_DIRECTIONS = 5  # top principal directions shared by all tokens carry no topic; removing them sharpens cosine
FIRST_CONTENT_ID = 999  # BERT vocabularies keep [PAD], [unusedN], [CLS], [SEP], [MASK] below this id
CACHE_ENV = "MEMTAPE_CACHE"


def cache_dir() -> Path:
    """``$MEMTAPE_CACHE``, else ``$XDG_CACHE_HOME/memtape``, else ``~/.cache/memtape``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "memtape"


@dataclass(frozen=True)
class StaticEmbeddings:
    """A tokenizer and one unit-length row per vocabulary token; ``content[i]`` marks tokens that carry words."""

    tokenizer: Tokenizer
    matrix: np.ndarray  # (vocab, dim) float32, rows unit length
    content: np.ndarray  # (vocab,) bool

    @property
    def vocab_size(self) -> int:
        return self.matrix.shape[0]

    def token_ids(self, texts: list[str]) -> list[np.ndarray]:
        """Content token ids of each text, in order (specials and punctuation dropped)."""
        encodings = self.tokenizer.encode_batch([t or "" for t in texts], add_special_tokens=False)
        out = []
        for enc in encodings:
            ids = np.asarray(enc.ids, dtype=np.int64)
            out.append(ids[self.content[ids]] if len(ids) else ids)
        return out

    def vector(self, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Unit-length weighted sum of the token rows (zeros for an empty unit)."""
        if len(ids) == 0:
            return np.zeros(self.matrix.shape[1], dtype=np.float32)
        v = weights.astype(np.float32) @ self.matrix[ids]
        norm = float(np.linalg.norm(v))
        return v / norm if norm > 0 else v

    def encode(self, texts: list[str]) -> np.ndarray:
        """One unit-length vector per text, every content token weighted alike (as recall's line vectors)."""
        rows = [self.vector(ids, np.ones(len(ids), dtype=np.float32)) for ids in self.token_ids(texts)]
        return np.stack(rows) if rows else np.zeros((0, self.matrix.shape[1]), dtype=np.float32)


def _distill(model_dir: str, cls_id: int, sep_id: int) -> np.ndarray:
    """Each token's MiniLM output in ``[CLS] token [SEP]``, then centred, de-commoned and normalised."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).eval()
    vocab = model.config.vocab_size
    out = np.zeros((vocab, model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, vocab, DISTILL_BATCH):
            ids = torch.arange(start, min(vocab, start + DISTILL_BATCH))
            batch = torch.stack([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], 1)
            hidden = model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
            out[start : start + len(ids)] = hidden[:, 1].numpy()
    out -= out.mean(0)
    _, _, vt = np.linalg.svd(out[FIRST_CONTENT_ID:], full_matrices=False)
    top = vt[:COMMON_DIRECTIONS]
    out -= (out @ top.T) @ top
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


def cache_key(weights: Path) -> str:
    """The cached matrix's key: a digest of the weights' bytes, so every install of one model shares one file
    (a key from the install's path left a new 47 MB copy behind for each virtualenv)."""
    with weights.open("rb") as f:
        digest = hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()
    return stable_id(digest, COMMON_DIRECTIONS)


def _content_mask(tokenizer: Tokenizer, vocab: int) -> np.ndarray:
    mask = np.zeros(vocab, dtype=bool)
    for i in range(FIRST_CONTENT_ID, vocab):
        piece = tokenizer.id_to_token(i) or ""
        mask[i] = any(ch.isalnum() for ch in piece)
    return mask


@functools.lru_cache(maxsize=None)
def static_embeddings(name: str | None = None) -> StaticEmbeddings:
    """The distilled static embeddings of the sentence model ``name`` (a local directory; the packaged MiniLM by default)."""
    from tokenizers import Tokenizer

    from memtape.transforms.models import DEFAULT_EMBEDDING_MODEL, embedding_model_path, offline

    offline()
    model_dir = Path(embedding_model_path(name or DEFAULT_EMBEDDING_MODEL))
    weights = next(p for p in (model_dir / "model.safetensors", model_dir / "pytorch_model.bin") if p.exists())
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    cached = cache_dir() / f"static-embed-{cache_key(weights)}.npy"
    if cached.exists():
        matrix = np.load(cached)
    else:
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        assert cls_id is not None and sep_id is not None  # a word-piece vocabulary holds both
        matrix = _distill(str(model_dir), cls_id, sep_id)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, matrix)
        os.replace(tmp, cached)
    return StaticEmbeddings(tokenizer, matrix, _content_mask(tokenizer, matrix.shape[0]))
