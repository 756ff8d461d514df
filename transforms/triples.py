"""Subject-predicate-object triples from a spaCy dependency parse, and the Beam stage that emits them.

``extract(doc)`` walks each sentence's parse with general rules (active and
passive voice, copulas, prepositional objects, clausal complements, conjunct
distribution, relative and participial clauses, appositions, possessives) and
returns ``Extraction`` values that keep negation and modality as attributes.
``triple_rows`` turns them into ``triples`` rows with provenance, resolving
pronouns to speakers or named mentions of the same episode where that is clear.
``ExtractTriples`` runs both over episode bundles with one batched spaCy model
per worker. This module reads parses and writes rows; it never touches the store.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam

from memtape.schemas.records import stable_id
from memtape.transforms.entities import EntityResolver
from memtape.transforms.models import DEFAULT_SPACY_MODEL, spacy_model
from memtape.transforms.structured_triples import structured_triples

SUBJECT_DEPS = frozenset({"nsubj", "nsubjpass", "csubj", "csubjpass"})
OBJECT_DEPS = ("dobj", "attr", "oprd", "acomp", "dative")
CLAUSE_OBJECT_DEPS = frozenset({"ccomp"})
EXTRA_ARG_DEPS = frozenset({"npadvmod"})
NOMINAL_POS = frozenset({"NOUN", "PROPN", "PRON", "NUM", "X", "ADJ", "DET", "SYM"})
# Children that start a separate proposition, so they are cut out of an argument's span.
CLAUSE_DEPS = frozenset({"relcl", "appos", "acl", "advcl"})
NEGATIONS = frozenset({"not", "n't", "never", "no", "nt"})
RELATIVE_PRONOUNS = frozenset({"who", "which", "that", "whom", "whose"})
PERSONAL_PRONOUNS = frozenset({"i", "me", "you", "he", "him", "she", "her", "we", "us", "they", "them", "it", "myself", "yourself", "himself", "herself"})
FIRST_PERSON = frozenset({"i", "me", "myself"})
SECOND_PERSON = frozenset({"you", "yourself"})
THIRD_PERSON_HUMAN = frozenset({"he", "him", "himself", "she", "her", "herself"})
UNRESOLVED_PRONOUN = "unresolved_pronoun"
DEFAULT_CONFIDENCE = 0.8
STRUCTURED_KINDS = frozenset({"health"})
NLP_BATCH_SIZE = 64
NLP_DISABLE = ()  # tagger, parser, attribute_ruler, lemmatizer and ner are all read here


@dataclasses.dataclass(frozen=True)
class Extraction:
    """One proposition: token indices of each slot, plus the attributes that change its meaning."""

    subject: tuple[int, ...]
    relation: tuple[int, ...]  # surface relation tokens in order (auxiliaries, negation, verb, particle, preposition)
    predicate: str  # lemmatised predicate without auxiliaries or negation, e.g. "move to", "be written by"
    object: tuple[int, ...]
    extras: tuple[tuple[int, ...], ...] = ()  # further arguments (prepositional and temporal phrases)
    negated: bool = False
    modality: str | None = None
    passive: bool = False
    agent: tuple[int, ...] = ()  # the by-phrase object of a passive, for active normalisation


def _span(doc: Any, head: int, cut: frozenset[str] | None = None, skip: frozenset[int] = frozenset()) -> tuple[int, ...]:
    """The subtree of ``head`` without children of the ``cut`` relations (clauses by default), trimmed of edge punctuation."""
    cut = CLAUSE_DEPS if cut is None else cut
    out: list[int] = []
    stack = [doc[head]]
    while stack:
        tok = stack.pop()
        out.append(tok.i)
        for child in tok.children:
            if child.i in skip or (child.dep_ in cut and child.i != head):
                continue
            stack.append(child)
    out.sort()
    while out and doc[out[0]].is_punct:
        out.pop(0)
    while out and doc[out[-1]].is_punct:
        out.pop()
    return tuple(out)


def _conjuncts(tok: Any) -> list[Any]:
    """``tok`` and every token coordinated with it (``Alice and Bob`` gives both)."""
    out = [tok]
    for child in tok.children:
        if child.dep_ == "conj":
            out.extend(_conjuncts(child))
    return out


def _without_conjuncts(doc: Any, tok: Any) -> tuple[int, ...]:
    """The span of one conjunct alone: its subtree less the coordinated siblings and their conjunction."""
    skip = frozenset(c.i for c in tok.children if c.dep_ in ("conj", "cc", "preconj"))
    return _span(doc, tok.i, skip=skip)


def _arguments(doc: Any, tok: Any) -> list[tuple[int, ...]]:
    """One span per conjunct of a nominal argument, so coordinated arguments each get a triple."""
    return [_without_conjuncts(doc, c) for c in _conjuncts(tok)]


def _subjects(doc: Any, verb: Any) -> tuple[list[tuple[int, ...]], bool]:
    """Subject spans of ``verb`` (own, inherited through coordination or clause attachment) and its voice."""
    for child in verb.children:
        if child.dep_ in SUBJECT_DEPS:
            passive = child.dep_.endswith("pass")
            if child.lower_ in RELATIVE_PRONOUNS and verb.dep_ == "relcl":
                return _arguments(doc, verb.head), passive
            if child.dep_.startswith("csubj"):
                return [_span(doc, child.i)], passive
            return _arguments(doc, child), passive
    passive = any(c.dep_ == "auxpass" for c in verb.children)
    if verb.dep_ == "conj" and verb.head.pos_ in ("VERB", "AUX"):
        subjects, head_passive = _subjects(doc, verb.head)
        return subjects, passive
    if verb.dep_ in ("relcl", "acl") and verb.head.pos_ in NOMINAL_POS:
        return [_span(doc, verb.head.i)], passive or (verb.dep_ == "acl" and verb.tag_ == "VBN")
    if verb.dep_ in ("xcomp", "advcl") and verb.head.pos_ in ("VERB", "AUX"):
        objects = [c for c in verb.head.children if c.dep_ == "dobj"]
        if verb.dep_ == "xcomp" and objects:
            return [_span(doc, objects[0].i)], passive
        return _subjects(doc, verb.head)[0], passive
    return [], passive


def _relation_tokens(verb: Any) -> tuple[list[int], bool, str | None]:
    """Auxiliaries, negation, the verb and its particle, with negation and modality read off them."""
    toks = [verb.i]
    negated, modality = False, None
    for child in verb.children:
        if child.dep_ in ("aux", "auxpass", "neg", "prt"):
            toks.append(child.i)
        if child.dep_ == "neg" or (child.dep_ == "advmod" and child.lower_ in NEGATIONS):
            negated = True
            if child.dep_ != "neg":
                toks.append(child.i)
        if child.dep_ == "aux" and child.tag_ == "MD":
            modality = child.lower_ if child.lemma_ in ("will", "would") else child.lemma_
    return sorted(toks), negated, modality


def _prep_object(doc: Any, prep: Any) -> list[tuple[int, ...]]:
    """Objects of a preposition (one per conjunct), or its clausal complement."""
    for child in prep.children:
        if child.dep_ == "pobj":
            return _arguments(doc, child)
        if child.dep_ in ("pcomp",):
            return [_span(doc, child.i, cut=frozenset())]
    return []


def _predicate_of(doc: Any, verb: Any, xcomp_chain: Sequence[Any], passive: bool, particles: Sequence[int], prep: Any | None) -> str:
    """The lemmatised predicate: ``be`` + participle for passives, otherwise the lemma chain."""
    words: list[str] = []
    if passive:
        words += ["be", verb.lower_]
    else:
        words.append(verb.lemma_.lower())
    for v in xcomp_chain:
        words += ["to", v.lemma_.lower()] if any(c.dep_ == "aux" and c.lower_ == "to" for c in v.children) else [v.lemma_.lower()]
    words += [doc[i].lower_ for i in particles]
    if prep is not None:
        words.append(prep.lower_)
    return " ".join(words)


def _verb_extractions(doc: Any, verb: Any) -> Iterator[Extraction]:
    """Triples headed by one verb or copula, subjects and objects distributed over their conjuncts."""
    subjects, passive = _subjects(doc, verb)
    if not subjects:
        return
    rel, negated, modality = _relation_tokens(verb)
    chain: list[Any] = []
    head = verb
    # "wants to visit Paris": fold an object-less control verb into the relation.
    while not any(c.dep_ in OBJECT_DEPS for c in head.children):
        xcomps = [c for c in head.children if c.dep_ == "xcomp" and c.pos_ in ("VERB", "AUX")]
        if not xcomps:
            break
        head = xcomps[0]
        chain.append(head)
        sub_rel, sub_neg, sub_mod = _relation_tokens(head)
        rel += sub_rel
        negated = negated or sub_neg
        modality = modality or sub_mod
        passive = passive or any(c.dep_ == "auxpass" for c in head.children)
    rel.sort()
    particles = [c.i for c in head.children if c.dep_ == "prt"]
    objects: list[tuple[int, ...]] = []
    for child in head.children:
        if child.dep_ in OBJECT_DEPS and not objects:
            objects = _arguments(doc, child) if child.dep_ != "acomp" else [_span(doc, child.i)]
            if any(doc[i].lower_ == "no" and doc[i].dep_ == "det" for i in objects[0]):
                negated = True
    if not objects:
        for child in head.children:
            if child.dep_ in CLAUSE_OBJECT_DEPS:
                objects = [_span(doc, child.i, cut=frozenset())]
                break
    preps = [c for c in head.children if c.dep_ in ("prep", "agent")]
    agent: tuple[int, ...] = ()
    rel_prep = None
    extras: list[tuple[int, ...]] = []
    for prep in preps:
        pobjs = _prep_object(doc, prep)
        if not pobjs:
            continue
        if prep.dep_ == "agent" and passive:
            agent = pobjs[0]
        if not objects and rel_prep is None:
            rel_prep = prep
            objects = pobjs
            continue
        extras.append((prep.i, *pobjs[0]))
    for child in head.children:
        if child.dep_ in EXTRA_ARG_DEPS:
            extras.append(_span(doc, child.i))
    if not objects:
        return
    relation = tuple(sorted(rel + ([rel_prep.i] if rel_prep is not None else [])))
    predicate = _predicate_of(doc, verb, chain, passive, particles, rel_prep)
    for subject in subjects:
        for obj in objects:
            yield Extraction(subject, relation, predicate, obj, tuple(extras), negated, modality, passive, agent)


def _copular_extractions(doc: Any, noun: Any) -> Iterator[Extraction]:
    """Appositions ("Bob, Alice's manager, ...") and possessives ("Alice's manager" gives manager of Alice)."""
    named = None
    for child in noun.children:
        if child.dep_ == "appos" and child.pos_ != "PRON":
            base = _span(doc, noun.i, skip=frozenset({child.i}))
            yield Extraction(base, (), "be", _span(doc, child.i))
            named = noun if noun.pos_ == "PROPN" else None
            if child.pos_ != "PROPN":
                yield from _possessive(doc, child, base)
    if noun.dep_ == "appos" or named is not None:
        return
    subject = None
    if noun.dep_ == "attr" and noun.head.lemma_ == "be":
        subj = [c for c in noun.head.children if c.dep_ == "nsubj"]
        subject = _span(doc, subj[0].i) if subj else None
    yield from _possessive(doc, noun, subject)


def _possessive(doc: Any, noun: Any, holder: tuple[int, ...] | None) -> Iterator[Extraction]:
    """``X's N``: (holder, N of, X) when the NP names its referent, else (X, has, N)."""
    for child in noun.children:
        if child.dep_ != "poss" or child.pos_ == "PRON":
            continue
        owner = _span(doc, child.i)
        owner = tuple(i for i in owner if doc[i].tag_ != "POS")
        thing = tuple(i for i in _span(doc, noun.i) if i not in _span(doc, child.i) and doc[i].tag_ != "POS")
        if holder:
            yield Extraction(holder, (), f"{noun.lemma_.lower()} of", owner)
        else:
            yield Extraction(owner, (), "have", thing)


def extract(doc: Any) -> list[Extraction]:
    """Every proposition the rules find in a parsed ``doc``, in sentence order."""
    out: list[Extraction] = []
    for tok in doc:
        if tok.pos_ in ("VERB", "AUX") and tok.dep_ not in ("aux", "auxpass", "xcomp") or (tok.dep_ == "xcomp" and any(c.dep_ in OBJECT_DEPS for c in tok.head.children)):
            out.extend(_verb_extractions(doc, tok))
        elif tok.pos_ in ("NOUN", "PROPN"):
            out.extend(_copular_extractions(doc, tok))
    return out


def text_of(doc: Any, idx: Sequence[int]) -> str:
    """Surface text of token indices, keeping the document's own spacing inside contiguous runs."""
    if not idx:
        return ""
    parts: list[str] = []
    for n, i in enumerate(idx):
        tok = doc[i]
        last = n == len(idx) - 1 or idx[n + 1] != i + 1
        parts.append(tok.text if last else tok.text_with_ws)
        if last and n != len(idx) - 1:
            parts.append(" ")
    return "".join(parts).strip()


def carb_tuple(doc: Any, ex: Extraction) -> tuple[str, tuple[str, ...]]:
    """The n-ary (relation, args) view of an extraction, as CaRB's gold writes it (space-joined tokens)."""
    words = lambda idx: " ".join(doc[i].text for i in idx)  # noqa: E731
    relation = words(ex.relation) if ex.relation else ex.predicate.replace("have", "has")
    return relation, (words(ex.subject), words(ex.object), *(words(e) for e in ex.extras))


# ---------------------------------------------------------------- rows with provenance and pronoun resolution


@dataclasses.dataclass
class Mentions:
    """Named people seen so far in an episode, and its speakers, for resolving pronouns to the nearest one."""

    speakers: list[str] = dataclasses.field(default_factory=list)
    people: list[str] = dataclasses.field(default_factory=list)

    def see(self, sender: str | None, doc: Any) -> None:
        if sender:
            if sender in self.speakers:
                self.speakers.remove(sender)
            self.speakers.append(sender)
        self.people += [ent.text for ent in doc.ents if ent.label_ == "PERSON"]

    def resolve(self, pronoun: str, sender: str | None) -> str | None:
        """The referent of ``pronoun`` when exactly one candidate fits, else None."""
        p = pronoun.lower()
        if p in FIRST_PERSON:
            return sender
        if p in SECOND_PERSON:
            others = [s for s in self.speakers if s != sender]
            return others[0] if len(set(others)) == 1 else None
        if p in THIRD_PERSON_HUMAN:
            candidates = [n for n in reversed(self.people) if n != sender]
            return candidates[0] if candidates else None
        return None


def _resolved(doc: Any, idx: tuple[int, ...], sender: str | None, mentions: Mentions) -> tuple[str, bool]:
    """Argument text with a lone personal pronoun replaced by its referent; the flag says it stayed a pronoun."""
    text = text_of(doc, idx)
    if len(idx) == 1 and doc[idx[0]].lower_ in PERSONAL_PRONOUNS:
        who = mentions.resolve(doc[idx[0]].text, sender)
        return (who, False) if who else (text, True)
    return text, False


def triple_rows(
    doc: Any,
    *,
    tenant: str,
    raw_event_id: str,
    event_time: Any = None,
    episode_id: str | None = None,
    sender: str | None = None,
    mentions: Mentions | None = None,
    resolver: EntityResolver | None = None,
    char_offset: int = 0,
) -> list[dict[str, Any]]:
    """``triples`` rows for one parsed text: passives with an agent become active, extra phrases their own triples."""
    mentions = mentions if mentions is not None else Mentions()
    mentions.see(sender, doc)
    rows: list[dict[str, Any]] = []
    for ex in extract(doc):
        if ex.passive and ex.agent:
            base = (ex.agent, ex.predicate.split(" ", 1)[1].rsplit(" by", 1)[0], ex.subject)
            verb = doc[[i for i in ex.relation if doc[i].dep_ not in ("aux", "auxpass", "neg")][0]]
            base = (ex.agent, verb.lemma_.lower(), ex.subject)
        else:
            base = (ex.subject, ex.predicate, ex.object)
        parts = [base]
        stem = base[1] if not ex.relation else base[1].rsplit(" ", 1)[0] if base[1] != ex.predicate or " " not in base[1] else base[1]
        for extra in ex.extras:
            if doc[extra[0]].dep_ in ("prep", "agent") and len(extra) > 1 and not (ex.passive and extra[1:] == ex.agent):
                parts.append((ex.subject, f"{_verb_lemma(doc, ex)} {doc[extra[0]].lower_}", extra[1:]))
        for subj_idx, predicate, obj_idx in parts:
            rows.append(_row(doc, ex, subj_idx, predicate, obj_idx, tenant, raw_event_id, event_time, episode_id, sender, mentions, resolver, char_offset))
        del stem
    return rows


def _verb_lemma(doc: Any, ex: Extraction) -> str:
    """The predicate without its own trailing preposition, for a further prepositional argument."""
    pred = ex.predicate
    if ex.relation and doc[ex.relation[-1]].dep_ in ("prep", "agent"):
        pred = pred.rsplit(" ", 1)[0]
    return pred


def _row(doc, ex, subj_idx, predicate, obj_idx, tenant, raw_event_id, event_time, episode_id, sender, mentions, resolver, char_offset) -> dict[str, Any]:
    subject, subj_flag = _resolved(doc, subj_idx, sender, mentions)
    obj, obj_flag = _resolved(doc, obj_idx, sender, mentions)
    used = [*subj_idx, *ex.relation, *obj_idx]
    char_start = char_offset + min(doc[i].idx for i in used)
    char_end = char_offset + max(doc[i].idx + len(doc[i]) for i in used)
    subject_id = resolver.mention(subject, _label(doc, subj_idx), raw_event_id) if resolver else None
    object_id = resolver.mention(obj, _label(doc, obj_idx), raw_event_id) if resolver else None
    return {
        "tenant": tenant,
        "triple_id": stable_id(tenant, raw_event_id, char_start, subject, predicate, obj, ex.negated),
        "episode_id": episode_id,
        "subject": subject,
        "predicate": predicate,
        "object": obj,
        "negated": ex.negated,
        "modality": ex.modality,
        "event_time": event_time,
        "confidence": DEFAULT_CONFIDENCE,
        "subject_entity_id": subject_id,
        "object_entity_id": object_id,
        "raw_event_id": raw_event_id,
        "char_start": char_start,
        "char_end": char_end,
        "flags": [UNRESOLVED_PRONOUN] if subj_flag or obj_flag else [],
        "support_count": 1,
        "last_seen": event_time,
    }


def _label(doc: Any, idx: Sequence[int]) -> str | None:
    """The NER label of the entity an argument's head token belongs to, if any."""
    if not idx:
        return None
    heads = [i for i in idx if doc[i].head.i not in idx or doc[i].head.i == i]
    tok = doc[heads[0]] if heads else doc[idx[0]]
    return tok.ent_type_ or None
