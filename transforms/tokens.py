"""Shared text measures: token counts, sentence spans and content words.

Dedupe, compression and their evaluation must count tokens and pick sentences
the same way, or ratios would compare different units. The token counter is a
fast, model-free approximation (words and punctuation marks), stable across
machines. ASCII text, the common case, takes the compiled text core
(``memtape._textcore``) or a ``bytes.translate`` pass, with results identical
to the regexes, which define them and serve all other text. This module only
measures text: it never changes or stores it.
"""
from __future__ import annotations

import itertools
import re

from memtape import _textcore

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
WORD_RE = re.compile(r"\w+")
# A sentence ends at . ! ? or an ellipsis (and a closing quote or bracket) followed by space, or at a line break
# (wrapped lines are joined first). A match opens with the mark or the line break, so the regex engine skips ahead
# to those rare characters, and runs to the end of the whitespace after it: group 1 is that whitespace after a mark.
_SENTENCE_END_RE = re.compile(r"[.!?\u2026\n](?:(?<=\n)\s*|[\"')\]]?(\s+))")
# A period after a title ends no sentence ("Mr. Skilling"); nor one after a word of this list or a dotted abbreviation
# ("e.g", "a.m", "U.S") when a lower-case word or a figure follows ("approx. 40", "10 a.m. tomorrow"); nor one after
# an initial other than "I" when a capital follows ("Jeffrey K. Skilling"). Otherwise memories keep half sentences.
_TITLES = frozenset("mr mrs ms messrs dr prof sr st mt rev hon gen col capt lt sgt gov sen rep vs cf".split())
_ABBREVIATIONS = frozenset(
    "etc approx incl dept est no nos vol fig ext tel inc corp co ltd jan feb mar apr jun jul aug sep sept oct nov dec".split())
_MARKED_END_RE = re.compile(r"[.!?\u2026][\"')\]]?$")  # a sentence that ends at a mark, which a re-split finds again
# An email line break inside a paragraph is only a wrap when the next line does not start a list item.
_LIST_ITEM_RE = re.compile(r"^\s*(?:[-*\u2022>]|\d+[.)]|[A-Za-z][.)]\s)")
MIN_CONTENT_WORD_CHARS = 2
WRAP_MIN_CHARS = 45  # hard-wrapped mail lines run to ~70 characters; shorter lines end on purpose

STOPWORDS = frozenset(
    """a about above after again against all am an and any are aren't as at be because been before being below
    between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each
    few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself
    him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more most mustn't
    my myself no nor not of off on once only or other ought our ours ourselves out over own same shan't she she'd
    she'll she's should shouldn't so some such than that that's the their theirs them themselves then there
    there's these they they'd they'll they're they've this those through to too under until up very was wasn't we
    we'd we'll we're we've were weren't what what's when when's where where's which while who who's whom why
    why's with won't would wouldn't you you'd you'll you're you've your yours yourself yourselves also just will
    would could should may might must shall s t d ll m re ve isn aren wasn weren don doesn didn won wouldn shouldn
    couldn can't im ive id dont cant wont thats its lets us get got go going gonna wanna really""".split()
)


# bytes.translate table for ASCII text (its bytes never reach the padding): word characters kept, the rest made spaces.
_ASCII_WORDS_ONLY = "".join(chr(c) if WORD_RE.match(chr(c)) else " " for c in range(128)).encode().ljust(256)


def count_tokens(text: str | None) -> int:
    """Words plus punctuation marks: close to a subword tokenizer's count for English, and fast."""
    if not text:
        return 0
    if text.isascii():
        return _textcore.count_tokens(text)
    return len(TOKEN_RE.findall(text))


def word_tokens(text: str) -> list[str]:
    """The words of ``text`` as written: what ``WORD_RE.findall`` returns, faster for ASCII."""
    if not text.isascii():
        return WORD_RE.findall(text)
    return text.encode().translate(_ASCII_WORDS_ONLY).decode().split()


def words(text: str) -> list[str]:
    """Case-folded word tokens."""
    return word_tokens(text.casefold())


def content_words(text: str) -> set[str]:
    """Distinct case-folded words that carry meaning: not stopwords, not single letters."""
    return {w for w in words(text) if w not in STOPWORDS and (len(w) >= MIN_CONTENT_WORD_CHARS or w.isdigit())}


_CAMEL_RE = re.compile(r"(?<=[a-z])(?=[A-Z])")


def _stem(word: str) -> str:
    """A plural's singular, roughly ("conditions" -> "condition", "studies" -> "study"): enough to match a question's words."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def match_terms(text: str) -> set[str]:
    """Content words for matching a query to a text: camelCase split ("MedicationRequest"), plurals made singular."""
    return {_stem(w) for w in content_words(_CAMEL_RE.sub(" ", text))}


def has_content_words(text: str) -> bool:
    """Whether any meaningful word occurs, stopping at the first one."""
    for match in WORD_RE.finditer(text):
        w = match.group().casefold()
        if w not in STOPWORDS and (len(w) >= MIN_CONTENT_WORD_CHARS or w.isdigit()):
            return True
    return False


def unwrap(text: str) -> str:
    """Join hard-wrapped lines of a paragraph so a sentence split does not cut mid-sentence.

    Only a line near the wrap width continues on the next line; short lines
    (names, titles, list entries) end where they end.
    """
    return _textcore.unwrap(text, WRAP_MIN_CHARS) if text.isascii() else _py_unwrap(text)


def _py_unwrap(text: str) -> str:
    """``unwrap``'s definition in Python, for any text (the compiled core takes ASCII only, and its tests compare)."""
    if "\n" not in text:
        return text
    lines = text.split("\n")
    out = lines[:1]
    for line in itertools.islice(lines, 1, None):
        prev = out[-1]
        # len(prev) first: most lines are short, and stripping can only make them shorter.
        if len(prev) >= WRAP_MIN_CHARS and len(prev.strip()) >= WRAP_MIN_CHARS and line.strip() and not _LIST_ITEM_RE.match(line):
            out[-1] = prev.rstrip() + " " + line.strip()
        else:
            out.append(line)
    return "\n".join(out)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of ``text``, whitespace trimmed, empty ones skipped.

    Each sentence end swallows its whole whitespace run, so once the text's own
    ends are trimmed, the pieces between matches are trimmed and non-empty.
    """
    return _textcore.sentence_spans(text) if text.isascii() else _py_sentence_spans(text)


def ends_at_mark(sentence: str) -> bool:
    """Whether ``sentence`` ends at a mark (. ! ? or an ellipsis, maybe closed by a quote or bracket), not at a line break.

    Sentences joined by a space split again where they were split only after a mark: a
    sentence that ended at a line break ("Sr. Director" in a signature) would run on into the next.
    """
    return bool(_MARKED_END_RE.search(sentence))


def _py_sentence_spans(text: str) -> list[tuple[int, int]]:
    """``sentence_spans``'s definition in Python, for any text."""
    start, end = len(text) - len(text.lstrip()), len(text.rstrip())
    spans: list[tuple[int, int]] = []
    for match in _SENTENCE_END_RE.finditer(text, start, end):
        if _closes_abbreviation(text, match, end):
            continue
        stop = match.start(1)
        if stop < 0:  # a line break: the whitespace run holding it may open before it
            stop = match.start()
            while text[stop - 1].isspace():
                stop -= 1
        spans.append((start, stop))
        start = match.end()
    if start < end:
        spans.append((start, end))
    return spans


def _closes_abbreviation(text: str, end_match: re.Match[str], end: int) -> bool:
    """Whether ``end_match`` (a period, then spaces without a line break) closes an abbreviation, not a sentence."""
    dot, after = end_match.start(), end_match.end()
    if text[dot] != "." or end_match.start(1) != dot + 1 or "\n" in end_match.group(1):
        return False
    first = dot
    while first > 0 and (text[first - 1] == "." or text[first - 1].isalpha()):
        first -= 1
    if first > 0 and WORD_RE.match(text[first - 1]):
        return False  # "5Mr." or "x_e.g.": not a word of its own
    word = text[first:dot].lstrip(".")
    following = text[after] if after < end else ""
    lowered = word.lower()
    if lowered in _TITLES:
        return True
    # Letter case, not A-Z: "José M. Álvarez" is one sentence too (on ASCII text these are the compiled core's tests).
    if len(word) == 1 and word.isupper() and word != "I":
        return following.isupper()
    return bool(word) and ("." in word or lowered in _ABBREVIATIONS) and (following.islower() or "0" <= following <= "9")
