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


def test_a_cached_text_is_encoded_once_and_an_exact_request_gets_a_float32_vector(model):
    from memtape.transforms import encode

    encode.forget_vectors()
    texts = ["Caroline is adopting a child", "Gas prices rose in California"]
    fast = encode.embed_texts(texts, model, cached=True)
    assert len(encode._cache) == 2 and np.array_equal(encode.embed_texts(texts[::-1], model, cached=True), fast[::-1])
    exact = encode.embed_texts(texts, model, exact=True, cached=True)  # a bfloat16 vector does not serve it
    assert np.allclose(exact, model.encode(texts, normalize_embeddings=True), atol=1e-6)
    assert np.allclose(exact, fast, atol=2e-3)  # what bfloat16, where the CPU has AMX tiles, may move a vector
    assert np.array_equal(encode.embed_texts(texts, model, cached=True), exact)  # an exact vector serves any request
    assert len(encode._cache) == 2
    encode.forget_vectors()


def test_no_texts_embed_as_no_rows_of_the_model_width_cached_or_not(model):
    from memtape.transforms.static_embed import static_embeddings

    for encoder in (model, static_embeddings()):
        for cached in (False, True):
            assert embed_texts([], encoder, cached=cached).shape == (0, EMBEDDING_DIM)


def test_embed_memories_fills_the_embedding_column(model):
    rows = [{"tenant": "t1", "memory_id": f"m{i}", "text": text, "header": "who: A", "token_count": 3, "raw_event_ids": ["e"]}
            for i, text in enumerate(["ran a charity race", "camping at Lake Tahoe"])]

    def check(out):
        assert sorted(r["memory_id"] for r in out) == ["m0", "m1"]
        conform("memories", out)
        assert all(len(r["embedding"]) == EMBEDDING_DIM for r in out)

    with TestPipeline() as p:
        assert_that(p | beam.Create(rows) | EmbedMemories(), check)


def test_static_memory_vectors_embed_memories_and_queries_with_the_same_encoder(monkeypatch):
    from memtape.schemas.records import memory_pieces
    from memtape.transforms.encode import memory_text
    from memtape.transforms.static_embed import static_embeddings

    monkeypatch.setenv("MEMTAPE_MODELS_MEMORY_VECTORS", "static")
    static = static_embeddings()
    query = embed_texts(["Where is Melanie camping?"])  # what recall does with a query
    assert np.allclose(query, static.encode(["Where is Melanie camping?"]))
    row = {"tenant": "t1", "memory_id": "m0", "header": "who: Melanie", "token_count": 9, "raw_event_ids": ["e"],
           "text": "Melanie: We go camping at Lake Tahoe. \u2026 The drive takes six hours."}

    # Expected vectors computed here: a check that held the static model would pickle its whole matrix with it.
    memory_vector, piece_vectors = static.encode([memory_text(row)])[0], static.encode(memory_pieces(row["text"]))

    def check(out):
        (got,) = out
        assert np.allclose(got["embedding"], memory_vector, atol=1e-6)
        assert np.allclose(got["piece_embeddings"], piece_vectors, atol=1e-6)
        assert len(got["piece_embeddings"]) == 2

    with TestPipeline() as p:
        assert_that(p | beam.Create([row]) | EmbedMemories(), check)


def test_unknown_memory_vectors_setting_fails_in_one_line(monkeypatch):
    monkeypatch.setenv("MEMTAPE_MODELS_MEMORY_VECTORS", "word2vec")
    with pytest.raises(ValueError, match="memory_vectors is 'word2vec'; expected one of minilm, static"):
        embed_texts(["anything"])


def test_texts_are_encoded_in_groups_of_like_length_so_short_pieces_are_not_padded_to_a_memory():
    from memtape.transforms.encode import LENGTH_GROUP_RATIO, TRUNCATED_CHARS, _length_groups

    texts = ["x" * n for n in (5000, 12, 40, 700, 13, 2600, 25, 90, 1)]
    groups = _length_groups(texts)
    assert sorted(i for g in groups for i in g) == list(range(len(texts)))
    for group in groups:
        lengths = [max(1, min(len(texts[i]), TRUNCATED_CHARS)) for i in group]
        assert max(lengths) <= LENGTH_GROUP_RATIO * min(lengths)
    assert {0, 5} <= set(groups[-1]) and 1 not in groups[-1]  # the long memory texts batch together, apart from pieces
