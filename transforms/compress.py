"""Compression stage: turn each episode into one ``memories`` row under a token budget.

The memory text is extractive: greedy budgeted coverage picks the sentences
that cover the episode's content words, names, numbers and triples best per
token, in order under a "who:" label, either verbatim or condensed (the same
words minus low-information ones) when the budget is tight, so every word in a
memory traces back to a raw event. An optional abstractive summariser (a local
causal LM or an OpenAI-compatible endpoint) may rewrite the extract; it is off
by default.
Repeated facts merge into one triple with a support count. This module reads
bundles and triples; it never writes tables or touches ``raw_events``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import re
import urllib.request
from datetime import datetime
from typing import Any, Iterable, Protocol

import apache_beam as beam

from memtape import _textcore
from memtape.schemas.records import stable_id
from memtape.transforms.dedupe import describe_dropped
from memtape.transforms.tokens import STOPWORDS, WORD_RE, count_tokens, sentence_spans, unwrap, word_tokens

log = logging.getLogger(__name__)

DEFAULT_BUDGET_RATIO = 0.5  # share of the kept units' tokens a memory may spend
MIN_BUDGET_TOKENS = 24  # an episode this short is kept whole rather than cut to a fragment
NAME_OR_NUMBER_WEIGHT = 1.5  # names, figures and dates are what questions ask about
GENERIC_WEIGHT = 0.15  # chit-chat words say little about the episode
TRIPLE_WEIGHT = 2.0
COST_EXPONENT = 0.6  # gain per token^0.6: short greetings must not crowd out long informative sentences  # a sentence that states an extracted fact is worth keeping for its provenance
INITIAL_STRENGTH = 1.0
# Function words that change a statement's meaning stay even in the condensed rendering.
KEPT_FUNCTION_WORDS = frozenset("no not nor never without before after during until against more most few over under off".split())
FILLER_WORDS = frozenset("wow oh ah hey hi yeah yep haha lol omg um uh well actually definitely absolutely literally basically honestly totally super pretty quite".split())
_DROPPED_WORDS = (STOPWORDS - KEPT_FUNCTION_WORDS) | FILLER_WORDS
EPISODES_TAG = "episodes"

GENERIC_WORDS = frozenset(
    """great awesome amazing cool wow thanks thank glad nice sounds totally super hey hi hello yeah yes sure good
    lol haha definitely absolutely fun excited proud hope hear appreciate sweet wonderful fantastic incredible
    stuff thing things lot lots pretty kinda gotta okay ok oh ah awesome cute lovely beautiful especially
    share sharing talk talking chat chatting know think feel feeling felt glad keep keeping bye later""".split()
)


def _prefix_tree_alternation(words: Iterable[str]) -> str:
    """A regex alternation of ``words`` nested by shared prefixes, so a failed match costs a branch per letter, not per word.

    It matches what the flat alternation matches wherever a match must span a
    whole word (as _DROPPED_RE's lookarounds demand), whatever the branch order.
    """
    tree: dict[str, dict] = {}
    for word in sorted(words):
        node = tree
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}  # a word ends here
    return _alternation_of(tree)


def _alternation_of(node: dict[str, dict]) -> str:
    # A word ending here is tried after its longer continuations, as in a longest-first flat alternation.
    branches = [re.escape(ch) + _alternation_of(child) if ch else "" for ch, child in sorted(node.items(), key=lambda kv: not kv[0])]
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


_DROPPED_REGEX_WORDS = frozenset(w for w in _DROPPED_WORDS | {"I"} if "'" not in w)  # what _DROPPED_RE drops
_DROPPED_ALT = _prefix_tree_alternation(_DROPPED_REGEX_WORDS)
_DROPPED_RE = re.compile(rf"(?<![\w'&.:-]){_DROPPED_ALT}(?![\w'&-]|[.:]\w)")  # lower case only: capitalised ones are names
_NEGATION_RE = re.compile(r"\b\w+n['\u2019]t\b", re.I)
_CLITIC_RE = re.compile(r"['\u2019](?:s|m|re|ve|ll|d)\b", re.I)
_FIRST_WORD_RE = re.compile(r"\W*(\w+)\b(?!['&-]\w)")
# Marks standing loose: a run not attached to a word before it (currency signs aside), a run not attached to a word
# after it (percent and currency aside), or a currency sign with no figure after it. Every match opens with a mark,
# so the pattern consumes one first (and checks which kind by lookbehind): the regex engine then skips ahead to marks.
_LOOSE_PUNCT_RE = re.compile(
    r"[^\w\s](?:(?<=(?<!\w)[^\w\s$\u20ac\u00a3#])[^\w\s$\u20ac\u00a3#]*"
    r"|(?<=[^\w\s%$\u20ac\u00a3#])[^\w\s%$\u20ac\u00a3#]*(?!\w)|(?<=[$\u20ac\u00a3#])(?!\w))"
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
        self._model = None

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
    full: str
    short: str  # the condensed rendering: the same words minus the low-information ones
    tokens: int
    short_tokens: int
    weights: dict[str, float]
    triples: set[str]
    text: str = ""  # the rendering chosen for the memory


def condense(sentence: str) -> str:
    """``sentence`` without stopwords, fillers and loose punctuation, keeping negations, names and figures.

    Deletion-based compression in the spirit of Selective Context and
    LLMLingua, with a lexicon in place of a language model's self-information:
    every word left is the source's own, in order; "n't" becomes "not" so a
    negation is never lost, and a capitalised stopword inside a sentence is a
    name or a month ("May", "US") and stays. Regex passes keep it fast.
    """
    return condense_all([sentence.replace("\n", " ")])[0]  # inside a sentence a line break is only whitespace


def condense_all(sentences: list[str]) -> list[str]:
    """``condense`` of each of ``sentences`` (none holding a line break), each pass run once over all.

    Every pass matches within a line and sees a line break as it sees the
    string's ends (whitespace, no word), so one pass over the sentences joined
    by line breaks condenses each as if alone. ASCII text takes the compiled
    text core, which gives what ``_py_condense_lines`` gives.
    """
    if not sentences:
        return []
    joined = "\n".join(sentences)
    return _textcore.condense_lines(joined, _DROPPED_REGEX_WORDS) if joined.isascii() else _py_condense_lines(joined)


def _py_condense_lines(joined: str) -> list[str]:
    """Condensing's definition in Python, by regexes, for any text: each line of ``joined`` condensed."""
    if "'" in joined or "\u2019" in joined:  # both patterns need an apostrophe; most text has none
        joined = _CLITIC_RE.sub("", _NEGATION_RE.sub(" not", joined))
    opened = []
    for line in joined.split("\n"):
        first = _FIRST_WORD_RE.match(line)
        opened.append(line[first.end():] if first and first.group(1).casefold() in _DROPPED_WORDS else line)
    condensed = _LOOSE_PUNCT_RE.sub(" ", _DROPPED_RE.sub(" ", "\n".join(opened)))
    return [f"{words}." if (words := " ".join(line.split())) else "" for line in condensed.split("\n")]


def speaker_label(sender: str | None) -> str:
    """A short name for the memory text: the local part of an address, or the name as given."""
    if not sender:
        return "unknown"
    name = sender.split("<")[0].strip().strip('"') or sender
    return name.split("@")[0] if "@" in name else name


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
    by_event: dict[str, list[dict]] = {}
    for t in triples:
        by_event.setdefault(t.get("raw_event_id"), []).append(t)
    out: list[_Sentence] = []
    for i, unit in enumerate(units):
        text = unwrap(unit.get("text") or "")
        spans = sentence_spans(text)
        fulls = [text[a:b] for a, b in spans]  # line breaks end sentences: none holds one
        unit_sentences = []
        for (a, _), full, short in zip(spans, fulls, condense_all(fulls)):
            tokens, short_tokens = count_tokens(full), count_tokens(short)
            if short_tokens >= tokens:  # condensing saved nothing (or added a full stop): keep the original
                short, short_tokens = full, tokens
            unit_sentences.append(_Sentence(i, a, full, short, tokens, short_tokens, _word_weights(full, known), set()))
        for t in by_event.get(unit.get("event_id"), []):
            wanted = _triple_words(t)
            best = max(unit_sentences, key=lambda s: len(wanted & s.weights.keys()), default=None)
            if best is not None and wanted & best.weights.keys():
                best.triples.add(t["triple_id"])
        out.extend(unit_sentences)
    return out


def select_sentences(sentences: list[_Sentence], label_cost: list[int], budget: int) -> list[_Sentence]:
    """Lazy greedy budgeted coverage over condensed sentences, then spend what is left on verbatim renderings.

    A sentence's score is the weight of its words not covered yet plus
    TRIPLE_WEIGHT per fact not yet stated, per token^COST_EXPONENT of its
    condensed rendering (and its speaker label, until that unit's first
    sentence is taken). Coverage is submodular, so a sentence's gain only
    falls as others are taken; re-scoring the heap top until it stays on top
    gives the greedy result. The loop runs in the compiled core
    (``_textcore.greedy_cover``; ``tests/test_textcore.py`` holds it to the
    Python formulation). Condensed renderings let the budget reach every
    informative sentence; the leftover restores the original wording of the
    first-chosen ones.
    """
    order, spent = _textcore.greedy_cover(
        [s.weights for s in sentences], [s.triples for s in sentences], [s.short_tokens for s in sentences],
        [s.unit for s in sentences], [not s.short for s in sentences], label_cost, budget, TRIPLE_WEIGHT, COST_EXPONENT,
    )
    chosen = [sentences[i] for i in order]
    for s in chosen:  # greedy order: the most informative sentences regain their wording first
        s.text = s.short
        if spent + s.tokens - s.short_tokens <= budget:
            spent += s.tokens - s.short_tokens
            s.text = s.full
    return sorted(chosen, key=lambda s: (s.unit, s.start))


def _render(units: list[dict], chosen: list[_Sentence]) -> str:
    lines: list[str] = []
    current = None
    for s in chosen:
        if s.unit != current:
            lines.append(f"{speaker_label(units[s.unit].get('sender'))}: {s.text}")
            current = s.unit
        else:
            lines[-1] += " " + s.text
    return "\n".join(lines)


def _fmt_time(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M") if t else "?"


def _header(episode: dict, units: list[dict], participants: list[str], dropped_summary: str | None) -> str:
    start, end = episode.get("start_time"), episode.get("end_time")
    when = _fmt_time(start) if start == end or end is None else f"{_fmt_time(start)} to {_fmt_time(end)}"
    subjects = [json.loads(u["attrs"]).get("subject") if isinstance(u.get("attrs"), str) else (u.get("attrs") or {}).get("subject") for u in units]
    where = next((s for s in subjects if s), None) or episode.get("conversation_id") or "?"
    header = f"who: {', '.join(participants) or '?'}; when: {when} UTC; where: {episode.get('source_kind') or '?'} {where}"
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
    budget = max(math.ceil(budget_ratio * total), min(total, MIN_BUDGET_TOKENS))
    text = _render(units, select_sentences(sentences, label_cost, budget))
    if summariser is not None and text:
        try:
            text = summariser.summarise(text, budget) or text
        except Exception as exc:  # the summariser is optional: a failing one must not lose the memory
            log.warning("summariser failed, keeping the extract: %s", exc)
    members = list(dict.fromkeys([*(episode.get("member_ids") or []), *(u["event_id"] for u in units), *(d["event_id"] for d in dropped)]))
    participants = list(dict.fromkeys(speaker_label(u.get("sender")) for u in units if u.get("sender")))
    times = [u["event_time"] for u in units if u.get("event_time") is not None]
    episode = {**episode, "start_time": episode.get("start_time") or min(times, default=None), "end_time": episode.get("end_time") or max(times, default=None)}
    memory = {
        "tenant": episode["tenant"],
        "memory_id": stable_id(episode["tenant"], episode["episode_id"]),
        "episode_id": episode["episode_id"],
        "source_kind": episode.get("source_kind"),
        "conversation_id": episode.get("conversation_id"),
        "header": _header(episode, units, participants, dropped_summary),
        "text": text,
        "token_count": count_tokens(text),
        "raw_event_ids": members,
        "triple_ids": [t["triple_id"] for t in triples],
        "participants": participants,
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
        return bundles | "CompressEachEpisode" >> beam.ParDo(_CompressFn(self._budget_ratio, self._summariser)).with_outputs(EPISODES_TAG, main="memories")
