"""Predictive models that say how surprising a unit is given what came before.

Surprise is the mean negative log-likelihood per token of a unit's text. Two
predictors share one small interface (``surprise``, ``learn``, ``state``):
``NgramSurprise``, an online Witten-Bell bigram model over the tenant's own
token stream mixed with a cache of the open episode, so that surprise means
"unexpected for this person, here", needs no weights and adapts as it reads;
and ``CausalLMSurprise``, any local Hugging Face causal LM directory, scoring a
unit after the open episode's recent text on a GPU when one is present. This
module scores text only: it reads no store and segments nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

CACHE_WEIGHT = 0.3  # share of probability given to words already said in the open episode
UNIGRAM_PRIOR = 0.5  # add-k pseudo-count of every vocabulary token in the unigram floor
MAX_BIGRAMS = 400_000  # prune the rarest bigrams beyond this, so a tenant's state stays bounded
CONTEXT_TOKENS = 256  # causal LM: at most this many tokens of the open episode before the unit


@dataclass
class Unit:
    """One message, utterance or event as the segmenter sees it: text, content token ids and a unit vector."""

    event_id: str
    text: str
    ids: np.ndarray
    vector: np.ndarray
    event_time: Any = None
    sender: str | None = None


class Predictor(Protocol):
    """A pluggable predictive model; ``context`` is the open episode, oldest first."""

    def surprise(self, unit: Unit, context: Sequence[Unit]) -> float: ...

    def learn(self, unit: Unit) -> None: ...

    def state(self) -> dict[str, Any]: ...


def _sparse(counts: np.ndarray) -> dict[str, list[int]]:
    nz = np.flatnonzero(counts)
    return {"ids": nz.tolist(), "counts": counts[nz].astype(np.int64).tolist()}


def _dense(sparse: dict[str, list[int]], size: int) -> np.ndarray:
    out = np.zeros(size, dtype=np.int64)
    out[np.asarray(sparse["ids"], dtype=np.int64)] = sparse["counts"]
    return out


class NgramSurprise:
    """Online interpolated (Witten-Bell) bigram LM over one tenant's token ids, mixed with an episode cache.

    Witten-Bell backs off in proportion to how many different tokens followed a
    history, which suits a model that starts empty and grows with the stream.
    """

    def __init__(self, vocab_size: int, state: dict[str, Any] | None = None) -> None:
        self.vocab_size = vocab_size
        if state is None:
            self.unigram = np.zeros(vocab_size, dtype=np.int64)
            self.history = np.zeros(vocab_size + 1, dtype=np.int64)  # c(h); index vocab_size is the unit start
            self.types = np.zeros(vocab_size + 1, dtype=np.int64)  # distinct followers of h
            self.bigrams: dict[int, int] = {}
        else:
            self.unigram = _dense(state["unigram"], vocab_size)
            self.history = _dense(state["history"], vocab_size + 1)
            self.types = _dense(state["types"], vocab_size + 1)
            self.bigrams = {int(k): int(v) for k, v in zip(state["bigram_keys"], state["bigram_counts"])}
        self.total = int(self.unigram.sum())

    def _pairs(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prev = np.concatenate([[self.vocab_size], ids[:-1]]).astype(np.int64)
        return prev, prev * (self.vocab_size + 1) + ids

    def surprise(self, unit: Unit, context: Sequence[Unit]) -> float:
        ids = unit.ids
        if len(ids) == 0:
            return 0.0
        p_uni = (self.unigram[ids] + UNIGRAM_PRIOR) / (self.total + UNIGRAM_PRIOR * self.vocab_size)
        prev, keys = self._pairs(ids)
        seen = np.fromiter((self.bigrams.get(int(k), 0) for k in keys), dtype=np.float64, count=len(keys))
        hist, types = self.history[prev], self.types[prev]
        p_lm = np.where(hist > 0, (seen + types * p_uni) / np.maximum(hist + types, 1), p_uni)
        ctx = np.concatenate([u.ids for u in context]) if context else np.zeros(0, dtype=np.int64)
        if len(ctx):
            p_cache = (ctx[None, :] == ids[:, None]).sum(1) / len(ctx)
            p = (1 - CACHE_WEIGHT) * p_lm + CACHE_WEIGHT * p_cache
        else:
            p = p_lm
        return float(-np.log(p).mean())

    def learn(self, unit: Unit) -> None:
        ids = unit.ids
        if len(ids) == 0:
            return
        np.add.at(self.unigram, ids, 1)
        self.total += len(ids)
        prev, keys = self._pairs(ids)
        np.add.at(self.history, prev, 1)
        for h, k in zip(prev.tolist(), keys.tolist()):
            count = self.bigrams.get(k, 0)
            if count == 0:
                self.types[h] += 1
            self.bigrams[k] = count + 1
        if len(self.bigrams) > MAX_BIGRAMS:
            self._prune()

    def _prune(self) -> None:
        """Drop bigrams seen once (deterministically), keeping the history counts consistent."""
        for k in [k for k, c in self.bigrams.items() if c == 1]:
            h = k // (self.vocab_size + 1)
            del self.bigrams[k]
            self.history[h] -= 1
            self.types[h] -= 1

    def state(self) -> dict[str, Any]:
        keys = sorted(self.bigrams)
        return {
            "unigram": _sparse(self.unigram),
            "history": _sparse(self.history),
            "types": _sparse(self.types),
            "bigram_keys": keys,
            "bigram_counts": [self.bigrams[k] for k in keys],
        }


class CausalLMSurprise:
    """Token NLL of a unit under a local causal LM, given the open episode's recent text as prefix."""

    def __init__(self, model_dir: str, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from memtape.transforms.models import offline, pick_device

        offline()
        self._torch = torch
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
        self.model = model.to(self.device).eval()

    def surprise(self, unit: Unit, context: Sequence[Unit]) -> float:
        torch = self._torch
        target = self.tokenizer(" " + unit.text if context else unit.text, add_special_tokens=False)["input_ids"]
        if not target:
            return 0.0
        prefix = self.tokenizer("\n".join(u.text for u in context), add_special_tokens=False)["input_ids"]
        prefix = prefix[-CONTEXT_TOKENS:]
        bos = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        if not prefix and bos is not None:
            prefix = [bos]
        ids = torch.tensor([prefix + target], device=self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=ids).logits[0, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
        scored = nll[-len(target) :] if prefix else nll
        value = float(scored.mean())
        return value if math.isfinite(value) else 0.0

    def learn(self, unit: Unit) -> None:
        """A pretrained LM does not adapt online; the tenant's history reaches it only as context."""

    def state(self) -> dict[str, Any]:
        return {}


def random_gpt2(folder: Path, tokenizer_file: Path, **shape: Any) -> Path:
    """Save a GPT-2 of random weights (``shape``: GPT2Config sizes, GPT-2 small's by default) with a word-piece
    tokenizer to ``folder``, laid out like any local causal LM directory.

    No pretrained causal LM installs offline here; this exercises and times the
    ``CausalLMSurprise`` path, whose cost depends on the model's shape, not its weights.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), bos_token="[CLS]",
                                        eos_token="[SEP]", unk_token="[UNK]", pad_token="[PAD]")
    config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **shape)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
