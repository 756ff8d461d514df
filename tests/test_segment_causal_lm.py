"""The pluggable causal-LM predictor runs its real code path on a tiny randomly initialised model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from memtape.transforms.segment import EpisodeSegmenter, SegmenterConfig, TenantModel
from memtape.transforms.static_embed import static_embeddings
from memtape.transforms.models import DEFAULT_EMBEDDING_MODEL, embedding_model_path
from memtape.transforms.surprise import CausalLMSurprise, Unit, random_gpt2

FIXTURE = Path(__file__).parent / "fixtures" / "segment" / "topics.json"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 with random weights and the MiniLM word-piece vocabulary, saved like any HF model dir."""
    tokenizer = Path(embedding_model_path(DEFAULT_EMBEDDING_MODEL)) / "tokenizer.json"
    return random_gpt2(tmp_path_factory.mktemp("tiny-lm"), tokenizer, n_positions=512, n_embd=32, n_layer=2, n_head=2)


def _unit(text: str) -> Unit:
    return Unit("e", text, np.zeros(0, dtype=np.int64), np.zeros(384, dtype=np.float32))


def test_causal_lm_surprise_is_mean_token_nll_near_log_vocab(tiny_lm):
    lm = CausalLMSurprise(str(tiny_lm), device="cpu")
    alone = lm.surprise(_unit("book a table for four"), [])
    after = lm.surprise(_unit("book a table for four"), [_unit("find me a restaurant"), _unit("green table is near")])
    vocab = lm.model.config.vocab_size
    for value in (alone, after):
        assert abs(value - np.log(vocab)) < 1.5  # random weights: close to uniform over the vocabulary
    assert lm.surprise(_unit(""), []) == 0.0
    assert lm.state() == {}


def test_segmenter_runs_with_the_causal_lm_and_keeps_state(tiny_lm):
    emb = static_embeddings()
    lm = CausalLMSurprise(str(tiny_lm), device="cpu")
    items = json.loads(FIXTURE.read_text())
    units = [{"event_id": f"u{i}", "tenant": "t", "conversation_id": "c", "source_kind": "meeting",
              "sender": it["sender"], "event_time": None, "text": it["text"]} for i, it in enumerate(items)]
    config = SegmenterConfig()
    seg = EpisodeSegmenter(emb, config, TenantModel(emb.vocab_size, config, lm))
    rows = seg.feed(units[:9])
    state = json.loads(json.dumps(seg.state()))
    resumed = EpisodeSegmenter(emb, config, TenantModel(emb.vocab_size, config, lm, state["model"]), state)
    rows += resumed.feed(units[9:]) + resumed.flush()
    assert [m for r in rows for m in r["member_ids"]] == [u["event_id"] for u in units]
    assert all(np.isfinite(r["surprise"]).all() for r in rows)
