"""Memories get unit-length 384-dim MiniLM embeddings, with related texts closer than unrelated ones."""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from memtape.schemas import EMBEDDING_DIM, conform
from memtape.transforms.embed import EmbedMemories
from memtape.transforms.encode import embed_texts


@pytest.fixture(scope="module")
def model():
    from memtape.transforms.models import embedder

    return embedder()


def test_related_texts_embed_closer_than_unrelated(model):
    v = embed_texts(["Caroline is adopting a child", "Caroline researches adoption agencies", "Gas prices rose in California"], model)
    assert v.shape == (3, EMBEDDING_DIM) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_embed_memories_fills_the_embedding_column(model):
    rows = [{"tenant": "t1", "memory_id": f"m{i}", "text": text, "header": "who: A", "token_count": 3, "raw_event_ids": ["e"]}
            for i, text in enumerate(["ran a charity race", "camping at Lake Tahoe"])]

    def check(out):
        assert sorted(r["memory_id"] for r in out) == ["m0", "m1"]
        conform("memories", out)
        assert all(len(r["embedding"]) == EMBEDDING_DIM for r in out)

    with TestPipeline() as p:
        assert_that(p | beam.Create(rows) | EmbedMemories(), check)
