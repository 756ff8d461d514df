"""The compiled text core gives, on ASCII text, exactly what the Python definitions give.

Each pass is checked on generated text built from the characters and words
the rules turn on (stopwords, generic words, names, figures, apostrophes,
marks, list openers, every kind of ASCII whitespace, control characters),
and on the real mail of the shared Enron Maildir. The greedy selection is
held to the Python formulation it replaced.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memtape import _textcore
from memtape.schemas.records import content_hash, content_hashes, normalized
from memtape.transforms import compress, tokens
from memtape.transforms.dedupe import sketch
from memtape.transforms.compress import GENERIC_WEIGHT, GENERIC_WORDS, NAME_OR_NUMBER_WEIGHT
from memtape.transforms.tokens import STOPWORDS, TOKEN_RE, WRAP_MIN_CHARS

from conftest import SHARED_DATA

ENRON = SHARED_DATA / "email" / "skilling-j"

_WORDS = sorted(STOPWORDS | GENERIC_WORDS) + [
    "I", "The", "So", "Well", "May", "US", "don't", "Can't", "WON'T", "it's", "we're", "I'm", "they've", "you'll",
    "she'd", "n't", "'s", "x'S", "Enron", "Q3", "2001", "4.5", "10:30", "e-mail", "AT&T", "a_b", "re-org", "Mr.",
    "Dr.", "MRS.", "K.", "I.", "e.g.", "a.m.", "U.S.", "No.", "approx.", "Sept.", "x.Mr.", "9Mr.", "..St.",
]
_PIECES = st.one_of(
    st.sampled_from(_WORDS),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), min_size=1, max_size=3),
    st.sampled_from(list(" \t\n\r\x0b\x0c\x1c\x1f") + ["\n\n", "  ", " \n ", "> ", "- ", "1. ", "a) "]),
    st.sampled_from(list(".,;:!?'\"()[]-&$#%*/") + ["...", "--", "$5", "#1", "50%", ".)", "?\"", "!'"]),
    # Words glued to marks, where word boundaries and sentence ends fall.
    st.sampled_from([" n't", ":the", ".so", "&the", "-the", "'the", "the-", "the'", "the&", "so.x", "it:x", "the.", "I.", "x'd", "x're "]),
)
ascii_text = st.lists(_PIECES, max_size=60).map("".join)
# Lines long enough to be taken for hard-wrapped ones, so unwrap joins some.
wrapped_text = st.lists(st.tuples(st.integers(0, 70), st.sampled_from(["", " ", "  ", "- x", "3. x", "b) x", "\t"])), max_size=8).map(
    lambda lines: "\n".join(pad + "w" * width for width, pad in lines)
)

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
FUZZ = settings(max_examples=400, deadline=None)


@FUZZ
@given(ascii_text)
def test_token_count_matches_the_token_regex(text: str) -> None:
    assert _textcore.count_tokens(text) == len(TOKEN_RE.findall(text))


@FUZZ
@given(ascii_text)
def test_sentence_spans_match_the_regex_definition(text: str) -> None:
    assert _textcore.sentence_spans(text) == tokens._py_sentence_spans(text)


@pytest.mark.parametrize("text, sentences", [
    ("Jerry can brief Mr. Skilling on our plans for the year and Mr. Skilling can decide. Does that suit you?",
     ["Jerry can brief Mr. Skilling on our plans for the year and Mr. Skilling can decide.", "Does that suit you?"]),
    ("Jeffrey K. Skilling called. So am I. Then we left.", ["Jeffrey K. Skilling called.", "So am I.", "Then we left."]),
    ("Meet at 10 a.m. tomorrow. It is approx. 40 miles from the U.S. The end.",
     ["Meet at 10 a.m. tomorrow.", "It is approx. 40 miles from the U.S.", "The end."]),
    ("See Dr.\nSmith. Call me. Thanks etc. The rest", ["See Dr.", "Smith.", "Call me.", "Thanks etc.", "The rest"]),
    ("Please ask Mr. \n", ["Please ask Mr."]),
])
def test_a_period_that_closes_an_abbreviation_ends_no_sentence(text: str, sentences: list[str]) -> None:
    """A half sentence ("Skilling on our plans ... and Mr.") would reach a memory on its own, its subject lost."""
    for spans in (tokens._py_sentence_spans(text), _textcore.sentence_spans(text)):
        assert [text[a:b] for a, b in spans] == sentences


def test_the_compiled_core_knows_every_title_and_abbreviation() -> None:
    """The word lists are written twice, in C and in Python; a word missing from one would split only there."""
    for word in sorted(tokens._TITLES | tokens._ABBREVIATIONS):
        text = f"Ask {word.capitalize()}. smith came."
        assert _textcore.sentence_spans(text) == tokens._py_sentence_spans(text) == [(0, len(text))], word


def test_an_initial_or_abbreviation_before_an_accented_word_ends_no_sentence() -> None:
    """Non-ASCII text takes the Python definition, whose letter case must not stop at A-Z."""
    text = "José M. Álvarez called Dr. Müller. It is approx. été now. Call Ö. Smith. So am I. Ébène came."
    assert [text[a:b] for a, b in tokens.sentence_spans(text)] == [
        "José M. Álvarez called Dr. Müller.", "It is approx. été now.", "Call Ö. Smith.", "So am I.", "Ébène came."]


@FUZZ
@given(st.one_of(ascii_text, wrapped_text))
def test_unwrap_matches_the_python_definition(text: str) -> None:
    assert _textcore.unwrap(text, WRAP_MIN_CHARS) == tokens._py_unwrap(text)


@FUZZ
@given(ascii_text, st.frozensets(st.sampled_from(["enron", "jeff", "q3", "great", "the"])))
def test_word_weights_match_the_python_definition_in_order(text: str, known: frozenset[str]) -> None:
    weights = _textcore.word_weights(text, known, STOPWORDS, GENERIC_WORDS, GENERIC_WEIGHT, NAME_OR_NUMBER_WEIGHT)
    assert list(weights.items()) == list(compress._py_word_weights(text, known).items())


@FUZZ
@given(ascii_text)
def test_shingle_hashes_match_crc32_of_the_case_folded_shingles(text: str) -> None:
    assert sketch._shingle_hashes(text) == sketch._py_shingle_hashes(text)


@FUZZ
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=700))
def test_min_hashes_match_multiply_shift_hashing_in_numpy(crcs: list[int]) -> None:
    x = np.array(crcs, dtype=np.uint64)
    hashed = np.multiply.outer(x, sketch._PERM_A) + sketch._PERM_B
    expected = (hashed.min(axis=0) >> np.uint64(32)).astype(np.uint32)
    assert np.frombuffer(_textcore.min_hashes(x.tobytes(), sketch._PERM_A, sketch._PERM_B), dtype=np.uint32).tolist() == expected.tolist()


@FUZZ
@given(ascii_text, st.data())
def test_content_hashes_of_ascii_spans_are_those_of_the_normalised_text(text: str, data: st.DataObject) -> None:
    a = data.draw(st.integers(0, len(text)))
    b = data.draw(st.integers(a, len(text)))
    assert _textcore.spaced_lower(text, a, b) == normalized(text[a:b]).encode()
    assert content_hashes(text, [(a, b)]) == [content_hash(text[a:b])]


def test_the_core_refuses_text_that_is_not_ascii_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="ASCII"):
        _textcore.count_tokens("caf\u00e9")
    # The public functions take any text: the Python definitions serve what the core refuses.
    assert tokens.count_tokens("caf\u00e9 ok") == 2


def test_the_core_refuses_bad_arguments_instead_of_guessing() -> None:
    with pytest.raises(TypeError, match="must be sets"):
        _textcore.word_weights("Some words", ["not", "a", "set"], STOPWORDS, GENERIC_WORDS, 0.15, 1.5)
    with pytest.raises(ValueError, match="aligned"):
        _textcore.min_hashes(memoryview(bytes(17))[1:], sketch._PERM_A, sketch._PERM_B)
    with pytest.raises(ValueError, match="negative or too large"):
        _textcore.greedy_cover([{"a": 1.0}], [-1], [0], [1], 10, 0.6)
    with pytest.raises(TypeError, match="weights not a dict"):
        _textcore.greedy_cover([["a"]], [1], [0], [1], 10, 0.6)
    # A word limit far beyond what the text can hold is only a limit.
    assert _textcore.shingle_hashes("a b c d e", 2**62, 1) == _textcore.shingle_hashes("a b c d e", 5, 1)


@pytest.mark.skipif(not ENRON.is_dir(), reason=f"shared Enron Maildir absent: {ENRON}")
def test_every_pass_agrees_with_its_definition_on_real_mail() -> None:
    from memtape.evals.compression import maildir_rows

    texts = [row["text"] for row in maildir_rows(Path(ENRON), "t") if row.get("text")]
    assert len(texts) > 1000 and all(text.isascii() for text in texts)
    known = frozenset({"jeff", "skilling"})
    for text in texts:
        unwrapped = tokens._py_unwrap(text)
        assert _textcore.unwrap(text, WRAP_MIN_CHARS) == unwrapped
        spans = tokens._py_sentence_spans(unwrapped)
        assert _textcore.sentence_spans(unwrapped) == spans
        sentences = [unwrapped[a:b] for a, b in spans]
        assert [list(compress._word_weights(s, known).items()) for s in sentences] == [
            list(compress._py_word_weights(s, known).items()) for s in sentences
        ]
        assert _textcore.count_tokens(text) == len(TOKEN_RE.findall(text))
        assert sketch._shingle_hashes(text) == sketch._py_shingle_hashes(text[: sketch.MAX_SKETCH_WORDS * 12])
        assert _textcore.spaced_lower(text, 0, len(text)) == normalized(text).encode()
    assert zlib.crc32(b"the cat sat") == int(np.frombuffer(_textcore.shingle_hashes("The cat sat", 3, 3)[1], dtype=np.uint64)[0])


def reference_lazy_greedy(weights: list[dict[str, float]], token_counts: list[int], units: list[int], label_cost: list[int],
                          budget: int) -> tuple[list[int], int]:
    """select_sentences' greedy loop as Python wrote it before the core took it over: the specification."""
    import heapq

    covered: set[str] = set()
    opened: set[int] = set()
    spent, chosen = 0, []

    def cost(i: int) -> int:
        return token_counts[i] + (0 if units[i] in opened else label_cost[units[i]])

    def score(i: int, weight: float) -> float:
        return weight / max(cost(i), 1) ** compress.COST_EXPONENT

    heap = [(-score(i, sum(weights[i].values())), i) for i in range(len(weights))]
    heapq.heapify(heap)
    while heap:
        _, i = heapq.heappop(heap)
        current = score(i, sum(w for k, w in weights[i].items() if k not in covered))
        if current <= 0:
            continue
        if heap and current < -heap[0][0]:
            heapq.heappush(heap, (-current, i))
            continue
        if spent + cost(i) > budget:
            continue
        spent += cost(i)
        chosen.append(i)
        opened.add(units[i])
        covered.update(weights[i])
    return chosen, spent


_sentence = st.tuples(
    st.dictionaries(st.sampled_from("abcdefghij"), st.sampled_from([GENERIC_WEIGHT, 1.0, NAME_OR_NUMBER_WEIGHT]), max_size=6),
    st.integers(0, 30), st.integers(0, 3),
)


@FUZZ
@given(st.lists(_sentence, max_size=25), st.lists(st.integers(0, 4), min_size=4, max_size=4), st.integers(0, 120))
def test_greedy_cover_takes_what_the_python_formulation_takes(sentences: list, label_cost: list[int], budget: int) -> None:
    columns = [list(column) for column in zip(*sentences)] if sentences else [[]] * 3
    weights, token_counts, units = columns
    expected = reference_lazy_greedy(weights, token_counts, units, label_cost, budget)
    assert _textcore.greedy_cover(weights, token_counts, units, label_cost, budget, compress.COST_EXPONENT) == expected
