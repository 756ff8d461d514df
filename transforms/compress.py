"""Compression stage: turn each episode into one ``memories`` row under a token budget.

A memory selects; it never rewrites. Greedy budgeted coverage picks the whole
sentences (or lines) that cover the episode's content words, names and numbers
best per token, and the memory keeps them exactly as written,
under one "who:" label per message; a gap between kept sentences of one
message shows as " … ". The saving comes from what dedupe already removed
(quoted replies, signatures, repeats) and from the sentences left out, never
from deleting words or punctuation inside a kept one, so numbers, units, codes,
negations and names stay as the source wrote them. Each memory also knows
whom it is about (``subjects``: the patient of a health record, the
correspondents of a mail, the participants of a chat or meeting). Selection
needs no parse, so it runs before triple extraction: the stage hands on, per
unit, the spans of the kept sentences, and only those are parsed for triples
(``transforms.triples``), the costliest step per word. This module reads
bundles; it never writes tables or touches ``raw_events``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from datetime import datetime
from typing import Any

import apache_beam as beam

from memtape import _textcore
from memtape.schemas.records import MEMORY_GAP, STRUCTURED_KINDS, record_attrs, speaker_label, stable_id, subjects_of
from memtape.transforms.dedupe import describe_dropped
from memtape.transforms.tokens import STOPWORDS, WORD_RE, count_tokens, ends_at_mark, sentence_spans, unwrap, word_tokens

DEFAULT_BUDGET_RATIO = 0.8  # share of the kept units' tokens a memory may spend (chosen by recall on LoCoMo dev: BENCHMARKS.md)
MIN_BUDGET_TOKENS = 48  # an episode this short is kept whole rather than cut to a fragment
NAME_OR_NUMBER_WEIGHT = 1.5  # names, figures and dates are what questions ask about
GENERIC_WEIGHT = 0.15  # chit-chat words say little about the episode
COST_EXPONENT = 0.6  # gain per token^0.6: short greetings must not crowd out long informative sentences
INITIAL_STRENGTH = 1.0
EPISODES_TAG = "episodes"
SELECTED_TAG = "selected"

GENERIC_WORDS = frozenset(
    """great awesome amazing cool wow thanks thank glad nice sounds totally super hey hi hello yeah yes sure good
    lol haha definitely absolutely fun excited proud hope hear appreciate sweet wonderful fantastic incredible
    stuff thing things lot lots pretty kinda gotta okay ok oh ah awesome cute lovely beautiful especially
    share sharing talk talking chat chatting know think feel feeling felt glad keep keeping bye later""".split()
)


@dataclasses.dataclass(slots=True)
class _Sentence:
    unit: int
    start: int
    text: str  # as written (hard wraps joined)
    tokens: int
    weights: dict[str, float]
    index: int  # position among its unit's sentences: next-door sentences render joined


@functools.lru_cache(maxsize=1 << 16)
def _word_score(raw: str) -> tuple[str, float, float] | None:
    """(case-folded word, weight opening a sentence, weight elsewhere), or None for a stopword or stray letter."""
    w = raw.casefold()
    if w in STOPWORDS or (len(w) < 2 and not w.isdigit()):
        return None
    if w in GENERIC_WORDS:
        return w, GENERIC_WEIGHT, GENERIC_WEIGHT
    if not raw.isalpha():  # a figure or date
        return w, NAME_OR_NUMBER_WEIGHT, NAME_OR_NUMBER_WEIGHT
    if raw[0].isupper():  # a name, unless it only opens the sentence
        return w, 1.0, NAME_OR_NUMBER_WEIGHT
    return w, 1.0, 1.0


def _word_weights(text: str, known: frozenset[str]) -> dict[str, float]:
    """Weight of each content word; ``known`` words (the participants' own names, already in the header) count little."""
    if text.isascii():
        return _textcore.word_weights(text, known, STOPWORDS, GENERIC_WORDS, GENERIC_WEIGHT, NAME_OR_NUMBER_WEIGHT)
    return _py_word_weights(text, known)


def _py_word_weights(text: str, known: frozenset[str]) -> dict[str, float]:
    """``_word_weights``'s definition in Python, for any text; equal weights keep the first-seen word order."""
    weights: dict[str, float] = {}
    for i, raw in enumerate(word_tokens(text)):
        score = _word_score(raw)
        if score is None:
            continue
        w, first, later = score
        weight = GENERIC_WEIGHT if w in known else later if i else first
        if weights.get(w, 0.0) < weight:
            weights[w] = weight
    return weights


def _name_words(units: list[dict]) -> frozenset[str]:
    return frozenset(w for u in units for w in WORD_RE.findall(speaker_label(u.get("sender")).casefold().replace(".", " ")))


def _sentences(units: list[dict]) -> list[_Sentence]:
    known = _name_words(units)
    out: list[_Sentence] = []
    for i, unit in enumerate(units):
        text = unwrap(unit.get("text") or "")
        out += [_Sentence(i, a, text[a:b], count_tokens(text[a:b]), _word_weights(text[a:b], known), k)
                for k, (a, b) in enumerate(sentence_spans(text))]
    return out


def select_sentences(sentences: list[_Sentence], label_cost: list[int], budget: int) -> list[_Sentence]:
    """Lazy greedy budgeted coverage over whole sentences, returned in reading order.

    A sentence's score is the weight of its words not covered yet per
    token^COST_EXPONENT (its own tokens, and its speaker label until that
    unit's first sentence is taken).
    Coverage is submodular, so a sentence's gain only falls as others are
    taken; re-scoring the heap top until it stays on top gives the greedy
    result. The loop runs in the compiled core (``_textcore.greedy_cover``;
    ``tests/test_textcore.py`` holds it to the Python formulation).
    """
    order, _spent = _textcore.greedy_cover(
        [s.weights for s in sentences], [s.tokens for s in sentences], [s.unit for s in sentences], label_cost, budget,
        COST_EXPONENT,
    )
    return sorted((sentences[i] for i in order), key=lambda s: (s.unit, s.start))


def _render(units: list[dict], chosen: list[_Sentence]) -> str:
    """One ``who: text`` line per message; kept sentences join by a space only where they were next to each other and the
    first ends at a mark, else by MEMORY_GAP, so splitting a line at the marks and at sentence ends gives back each kept
    sentence as written (a line break, like the one before a forwarded announcement whose header dedupe removed, is kept)."""
    lines: list[str] = []
    previous: _Sentence | None = None
    for s in chosen:
        if previous is None or s.unit != previous.unit:
            lines.append(f"{speaker_label(units[s.unit].get('sender'))}: {s.text}")
        else:
            joined = s.index == previous.index + 1 and ends_at_mark(previous.text)
            lines[-1] += (" " if joined else MEMORY_GAP) + s.text
        previous = s
    return "\n".join(lines)


def _fmt_time(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M") if t else "?"


def _header(episode: dict, units: list[dict], participants: list[str], subjects: list[str], dropped_summary: str | None) -> str:
    start, end = episode.get("start_time"), episode.get("end_time")
    when = _fmt_time(start) if start == end or end is None else f"{_fmt_time(start)} to {_fmt_time(end)}"
    titles = [record_attrs(u).get("subject") for u in units]
    where = next((t for t in titles if t), None) or episode.get("conversation_id") or "?"
    header = f"who: {', '.join(participants) or '?'}; when: {when} UTC; where: {episode.get('source_kind') or '?'} {where}"
    if episode.get("source_kind") == "health" and subjects:
        header += f"; about: {', '.join(subjects)}"
    return header + (f"; dropped: {dropped_summary}" if dropped_summary else "")


def _raw_offsets(raw: str, unwrapped: str) -> list[int]:
    """For each character of ``unwrap(raw)``, its offset in ``raw``: unwrapping only joins lines, so the
    non-space characters of both are the same sequence (a joining space maps to the first raw character after it)."""
    solid = [i for i, ch in enumerate(raw) if not ch.isspace()]
    out, k = [], 0
    for ch in unwrapped:
        out.append(solid[k] if k < len(solid) else len(raw))
        k += not ch.isspace()
    return out + [len(raw)]


def selected_spans(units: list[dict], chosen: list[_Sentence]) -> list[list[tuple[int, int]]]:
    """Per unit, the (start, end) offsets in its own ``text`` of each run of next-door kept sentences."""
    spans: list[list[tuple[int, int]]] = [[] for _ in units]
    previous: _Sentence | None = None
    offsets: list[int] = []
    for s in chosen:
        if previous is None or s.unit != previous.unit:
            raw = units[s.unit].get("text") or ""
            offsets = _raw_offsets(raw, unwrap(raw))
        start, end = offsets[s.start], offsets[s.start + len(s.text) - 1] + 1
        if previous is not None and s.unit == previous.unit and s.index == previous.index + 1:
            spans[s.unit][-1] = (spans[s.unit][-1][0], end)
        else:
            spans[s.unit].append((start, end))
        previous = s
    return spans


def build_memory(bundle: dict, budget_ratio: float = DEFAULT_BUDGET_RATIO) -> tuple[dict, str | None, list[list[tuple[int, int]]]]:
    """(MEMORIES row, dropped summary, kept spans per unit) for one episode bundle.

    ``bundle`` is ``{"episode": EPISODES row, "units": kept units in order,
    "dropped": dropped units}``. The row's ``raw_event_ids`` name every member,
    kept or dropped, so provenance is whole; its ``triple_ids`` stay empty
    until the triples of the kept spans are extracted (``pipelines.memory``).
    """
    episode, units, dropped = bundle["episode"], bundle.get("units") or [], bundle.get("dropped") or []
    dropped_summary = describe_dropped(dropped)
    sentences = _sentences(units)
    label_cost = [count_tokens(speaker_label(u.get("sender")) + ":") for u in units]
    total = sum(s.tokens for s in sentences) + sum(label_cost[i] for i in {s.unit for s in sentences})
    whole = episode.get("source_kind") in STRUCTURED_KINDS  # rendered records: one fact a line, nothing to leave out
    budget = total if whole else max(math.ceil(budget_ratio * total), min(total, MIN_BUDGET_TOKENS))
    chosen = select_sentences(sentences, label_cost, budget)
    text = _render(units, chosen)
    members = list(dict.fromkeys([*(episode.get("member_ids") or []), *(u["event_id"] for u in units), *(d["event_id"] for d in dropped)]))
    participants = list(dict.fromkeys(speaker_label(u.get("sender")) for u in units if u.get("sender")))
    subjects = subjects_of(units)
    times = [u["event_time"] for u in units if u.get("event_time") is not None]
    episode = {**episode, "start_time": episode.get("start_time") or min(times, default=None),
               "end_time": episode.get("end_time") or max(times, default=None)}
    memory = {
        "tenant": episode["tenant"],
        "memory_id": stable_id(episode["tenant"], episode["episode_id"]),
        "episode_id": episode["episode_id"],
        "source_kind": episode.get("source_kind"),
        "conversation_id": episode.get("conversation_id"),
        "header": _header(episode, units, participants, subjects, dropped_summary),
        "text": text,
        "token_count": count_tokens(text),
        "raw_event_ids": members,
        "triple_ids": [],
        "participants": participants,
        "subjects": subjects,
        "start_time": episode["start_time"],
        "end_time": episode["end_time"],
        "strength": INITIAL_STRENGTH,
        "archived": False,
    }
    return memory, dropped_summary, selected_spans(units, chosen)


def fact_key(triple: dict) -> tuple:
    """Triples with equal keys state the same fact: (tenant, subject, predicate, object, negated), case-folded."""
    norm = lambda s: " ".join(str(s or "").casefold().split())  # noqa: E731
    return (triple["tenant"], norm(triple["subject"]), norm(triple["predicate"]), norm(triple["object"]), bool(triple["negated"]))


class _CompressFn(beam.DoFn):
    def __init__(self, budget_ratio: float) -> None:
        self._budget_ratio = budget_ratio

    def process(self, bundle: dict[str, Any]):
        memory, dropped_summary, spans = build_memory(bundle, self._budget_ratio)
        yield memory
        episode = {**bundle["episode"], "dropped_ids": [d["event_id"] for d in bundle.get("dropped") or []], "dropped_summary": dropped_summary}
        yield beam.pvalue.TaggedOutput(EPISODES_TAG, episode)
        yield beam.pvalue.TaggedOutput(SELECTED_TAG, {"episode": bundle["episode"], "units": bundle.get("units") or [], "spans": spans})


class CompressEpisodes(beam.PTransform):
    """Episode bundles -> MEMORIES rows (main), EPISODES rows with their dropped summary (``episodes``) and
    the bundles with the spans each memory kept (``selected``: what ``ExtractTriples`` parses)."""

    def __init__(self, budget_ratio: float = DEFAULT_BUDGET_RATIO) -> None:
        super().__init__()
        self._budget_ratio = budget_ratio

    def expand(self, bundles):
        return bundles | "CompressEachEpisode" >> beam.ParDo(_CompressFn(self._budget_ratio)).with_outputs(
            EPISODES_TAG, SELECTED_TAG, main="memories")
