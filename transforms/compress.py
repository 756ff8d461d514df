"""Compression stage: turn each episode into one ``memories`` row under a token budget.

A memory selects; it never rewrites. Greedy budgeted coverage picks the whole
sentences (or lines) that cover the episode's content words, names, numbers
and triples best per token, and the memory keeps them exactly as written,
under one "who:" label per message; a gap between kept sentences of one
message shows as " … ". The saving comes from what dedupe already removed
(quoted replies, signatures, repeats) and from the sentences left out, never
from deleting words or punctuation inside a kept one, so numbers, units, codes,
negations and names stay as the source wrote them. Each memory also knows
whom it is about (``subjects``: the patient of a health record, the
correspondents of a mail, the participants of a chat or meeting). An optional
abstractive summariser (a local causal LM or an OpenAI-compatible endpoint)
may rewrite the extract; it is off by default. Repeated facts merge into one
triple with a support count. This module reads bundles and triples; it never
writes tables or touches ``raw_events``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import urllib.request
from datetime import datetime
from typing import Any, Iterable, Protocol

import apache_beam as beam

from memtape import _textcore
from memtape.schemas.records import MEMORY_GAP, STRUCTURED_KINDS, record_attrs, speaker_label, stable_id, subjects_of
from memtape.transforms.dedupe import describe_dropped
from memtape.transforms.tokens import STOPWORDS, WORD_RE, count_tokens, sentence_spans, unwrap, word_tokens

log = logging.getLogger(__name__)

DEFAULT_BUDGET_RATIO = 0.8  # share of the kept units' tokens a memory may spend (chosen by recall on LoCoMo dev: BENCHMARKS.md)
MIN_BUDGET_TOKENS = 24  # an episode this short is kept whole rather than cut to a fragment
NAME_OR_NUMBER_WEIGHT = 1.5  # names, figures and dates are what questions ask about
GENERIC_WEIGHT = 0.15  # chit-chat words say little about the episode
TRIPLE_WEIGHT = 2.0
COST_EXPONENT = 0.6  # gain per token^0.6: short greetings must not crowd out long informative sentences
INITIAL_STRENGTH = 1.0
EPISODES_TAG = "episodes"

GENERIC_WORDS = frozenset(
    """great awesome amazing cool wow thanks thank glad nice sounds totally super hey hi hello yeah yes sure good
    lol haha definitely absolutely fun excited proud hope hear appreciate sweet wonderful fantastic incredible
    stuff thing things lot lots pretty kinda gotta okay ok oh ah awesome cute lovely beautiful especially
    share sharing talk talking chat chatting know think feel feeling felt glad keep keeping bye later""".split()
)


class Summariser(Protocol):
    """Rewrites an extract into at most ``max_tokens`` tokens; optional, never required."""

    def summarise(self, text: str, max_tokens: int) -> str: ...


SUMMARY_PROMPT = (
    "Rewrite these conversation excerpts as a compact factual memory. Keep every name, date, number and decision; "
    "drop pleasantries. At most {max_tokens} words.\n\n{text}\n\nMemory:"
)


@dataclasses.dataclass
class TransformersSummariser:
    """A local causal LM (a folder path, loaded offline through transformers) as the summariser."""

    model_path: str
    device: str | None = None

    def __post_init__(self) -> None:
        self._model: Any = None
        self._tok: Any = None

    def summarise(self, text: str, max_tokens: int) -> str:
        from memtape.transforms.models import offline, pick_device

        offline()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self._model is None:
            self._tok = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
            self._model = AutoModelForCausalLM.from_pretrained(self.model_path, local_files_only=True)
            self._model.to(pick_device(self.device))
        inputs = self._tok(SUMMARY_PROMPT.format(text=text, max_tokens=max_tokens), return_tensors="pt").to(self._model.device)
        out = self._model.generate(**inputs, max_new_tokens=max_tokens * 2, do_sample=False)
        return self._tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


@dataclasses.dataclass
class OpenAICompatibleSummariser:
    """Any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp, Ollama ...) as the summariser."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0

    def summarise(self, text: str, max_tokens: int) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": SUMMARY_PROMPT.format(text=text, max_tokens=max_tokens)}],
            "max_tokens": max_tokens * 2,
            "temperature": 0,
        }
        request = urllib.request.Request(
            self.base_url.rstrip("/") + "/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})},
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return json.load(response)["choices"][0]["message"]["content"].strip()


@dataclasses.dataclass(slots=True)
class _Sentence:
    unit: int
    start: int
    text: str  # as written (hard wraps joined)
    tokens: int
    weights: dict[str, float]
    triples: set[str]
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


def _triple_words(triple: dict) -> set[str]:
    text = f"{triple.get('subject', '')} {triple.get('object', '')}".casefold()
    return {w for w in WORD_RE.findall(text) if w not in STOPWORDS}


def _name_words(units: list[dict]) -> frozenset[str]:
    return frozenset(w for u in units for w in WORD_RE.findall(speaker_label(u.get("sender")).casefold().replace(".", " ")))


def _sentences(units: list[dict], triples: list[dict]) -> list[_Sentence]:
    known = _name_words(units)
    by_event: dict[str | None, list[dict]] = {}
    for t in triples:
        by_event.setdefault(t.get("raw_event_id"), []).append(t)
    out: list[_Sentence] = []
    for i, unit in enumerate(units):
        text = unwrap(unit.get("text") or "")
        unit_sentences = [_Sentence(i, a, text[a:b], count_tokens(text[a:b]), _word_weights(text[a:b], known), set(), k)
                          for k, (a, b) in enumerate(sentence_spans(text))]
        for t in by_event.get(unit.get("event_id"), []):
            wanted = _triple_words(t)
            best = max(unit_sentences, key=lambda s: len(wanted & s.weights.keys()), default=None)
            if best is not None and wanted & best.weights.keys():
                best.triples.add(t["triple_id"])
        out.extend(unit_sentences)
    return out


def select_sentences(sentences: list[_Sentence], label_cost: list[int], budget: int) -> list[_Sentence]:
    """Lazy greedy budgeted coverage over whole sentences, returned in reading order.

    A sentence's score is the weight of its words not covered yet plus
    TRIPLE_WEIGHT per fact not yet stated, per token^COST_EXPONENT (its own
    tokens, and its speaker label until that unit's first sentence is taken).
    Coverage is submodular, so a sentence's gain only falls as others are
    taken; re-scoring the heap top until it stays on top gives the greedy
    result. The loop runs in the compiled core (``_textcore.greedy_cover``;
    ``tests/test_textcore.py`` holds it to the Python formulation).
    """
    order, _spent = _textcore.greedy_cover(
        [s.weights for s in sentences], [s.triples for s in sentences], [s.tokens for s in sentences],
        [s.unit for s in sentences], label_cost, budget, TRIPLE_WEIGHT, COST_EXPONENT,
    )
    return sorted((sentences[i] for i in order), key=lambda s: (s.unit, s.start))


def _render(units: list[dict], chosen: list[_Sentence]) -> str:
    """One ``who: text`` line per message; kept sentences that were apart in the source are joined by MEMORY_GAP."""
    lines: list[str] = []
    previous: _Sentence | None = None
    for s in chosen:
        if previous is None or s.unit != previous.unit:
            lines.append(f"{speaker_label(units[s.unit].get('sender'))}: {s.text}")
        else:
            lines[-1] += (" " if s.index == previous.index + 1 else MEMORY_GAP) + s.text
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


def build_memory(bundle: dict, budget_ratio: float = DEFAULT_BUDGET_RATIO, summariser: Summariser | None = None) -> tuple[dict, str | None]:
    """(MEMORIES row, dropped summary) for one episode bundle.

    ``bundle`` is ``{"episode": EPISODES row, "units": kept units in order,
    "triples": TRIPLES rows, "dropped": dropped units}``. The row's
    ``raw_event_ids`` name every member, kept or dropped, so provenance is whole.
    """
    episode, units = bundle["episode"], bundle.get("units") or []
    triples, dropped = bundle.get("triples") or [], bundle.get("dropped") or []
    dropped_summary = describe_dropped(dropped)
    sentences = _sentences(units, triples)
    label_cost = [count_tokens(speaker_label(u.get("sender")) + ":") for u in units]
    total = sum(s.tokens for s in sentences) + sum(label_cost[i] for i in {s.unit for s in sentences})
    whole = episode.get("source_kind") in STRUCTURED_KINDS  # rendered records: one fact a line, nothing to leave out
    budget = total if whole else max(math.ceil(budget_ratio * total), min(total, MIN_BUDGET_TOKENS))
    text = _render(units, select_sentences(sentences, label_cost, budget))
    if summariser is not None and text:
        try:
            text = summariser.summarise(text, budget) or text
        except Exception as exc:  # the summariser is optional: a failing one must not lose the memory
            log.warning("summariser failed, keeping the extract: %s", exc)
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
        "triple_ids": [t["triple_id"] for t in triples],
        "participants": participants,
        "subjects": subjects,
        "start_time": episode["start_time"],
        "end_time": episode["end_time"],
        "strength": INITIAL_STRENGTH,
        "archived": False,
    }
    return memory, dropped_summary


def fact_key(triple: dict) -> tuple:
    """Triples with equal keys state the same fact: (tenant, subject, predicate, object, negated), case-folded."""
    norm = lambda s: " ".join(str(s or "").casefold().split())  # noqa: E731
    return (triple["tenant"], norm(triple["subject"]), norm(triple["predicate"]), norm(triple["object"]), bool(triple["negated"]))


def merge_triples(rows: Iterable[dict]) -> list[dict]:
    """One row per fact: the first statement stays (id, provenance), later ones raise support_count and last_seen.

    Repetition over time is information: a fact said in ten episodes is
    stronger than one said once, and storing ten copies would only dilute recall.
    """
    merged: dict[tuple, dict] = {}
    for row in sorted(rows, key=lambda r: (r.get("event_time") is None, r.get("event_time") or datetime.min, r["triple_id"])):
        seen = row.get("last_seen") or row.get("event_time")
        key = fact_key(row)
        if key not in merged:
            merged[key] = {**row, "support_count": row.get("support_count") or 1, "last_seen": seen}
            continue
        kept = merged[key]
        kept["support_count"] += row.get("support_count") or 1
        if seen is not None and (kept["last_seen"] is None or seen > kept["last_seen"]):
            kept["last_seen"] = seen
        kept["confidence"] = max(filter(None, (kept.get("confidence"), row.get("confidence"))), default=None)
    return list(merged.values())


@dataclasses.dataclass(frozen=True)
class SummariserSpec:
    """How a worker builds its summariser in setup(): ``kind`` is "transformers" (model = path) or "openai"."""

    kind: str
    model: str
    base_url: str | None = None
    api_key: str | None = None

    def build(self) -> Summariser:
        if self.kind == "transformers":
            return TransformersSummariser(self.model)
        if self.kind == "openai":
            return OpenAICompatibleSummariser(self.base_url or "", self.model, self.api_key)
        raise ValueError(f"unknown summariser kind {self.kind!r} (transformers or openai)")


class _CompressFn(beam.DoFn):
    def __init__(self, budget_ratio: float, summariser: SummariserSpec | None) -> None:
        self._budget_ratio = budget_ratio
        self._spec = summariser

    def setup(self) -> None:
        self._summariser = self._spec.build() if self._spec else None

    def process(self, bundle: dict[str, Any]):
        memory, dropped_summary = build_memory(bundle, self._budget_ratio, self._summariser)
        yield memory
        episode = {**bundle["episode"], "dropped_ids": [d["event_id"] for d in bundle.get("dropped") or []], "dropped_summary": dropped_summary}
        yield beam.pvalue.TaggedOutput(EPISODES_TAG, episode)


class CompressEpisodes(beam.PTransform):
    """Episode bundles -> MEMORIES rows (main) and EPISODES rows with their dropped summary (``episodes``)."""

    def __init__(self, budget_ratio: float = DEFAULT_BUDGET_RATIO, summariser: SummariserSpec | None = None) -> None:
        super().__init__()
        self._budget_ratio = budget_ratio
        self._summariser = summariser

    def expand(self, bundles):
        compress = beam.ParDo(_CompressFn(self._budget_ratio, self._summariser))
        return bundles | "CompressEachEpisode" >> compress.with_outputs(EPISODES_TAG, main="memories")
