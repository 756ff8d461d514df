"""Subject-predicate-object triples from a spaCy dependency parse, and the Beam stage that emits them.

``extract(doc)`` walks each sentence's parse with general rules (active and
passive voice, copulas, prepositional objects, clausal complements, conjunct
distribution, relative and participial clauses, appositions, possessives) and
returns ``Extraction`` values that keep negation and modality as attributes.
``triple_rows`` turns them into ``triples`` rows with provenance, resolving
pronouns to speakers or named mentions of the same episode where that is clear.
``ExtractTriples`` runs both over episode bundles with one batched spaCy model
per worker; a bundle that names the spans its memory kept (``spans``, from
``transforms.compress``) has only those parsed, since the parse is the
costliest step per word and a left-out sentence is not recalled anyway. The
entity mentions it records are resolved to ids by the next stage,
``transforms.entities.ResolveEntities``. This module reads parses and writes
rows; it never touches the store.
"""
from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam

from memtape.schemas.records import ExtractedEpisode, stable_id
from memtape.transforms.entities import EntityResolver, MentionLog, split_address
from memtape.transforms.models import DEFAULT_SPACY_MODEL, lemma, spacy_model
from memtape.transforms.structured_triples import structured_triples

SUBJECT_DEPS = frozenset({"nsubj", "nsubjpass", "csubj", "csubjpass"})
OBJECT_DEPS = ("dobj", "attr", "oprd", "acomp", "dative")
CLAUSE_OBJECT_DEPS = frozenset({"ccomp"})
EXTRA_ARG_DEPS = frozenset({"npadvmod"})
VERBAL_POS = frozenset({"VERB", "AUX"})
NOMINAL_POS = frozenset({"NOUN", "PROPN", "PRON", "NUM", "X", "ADJ", "DET", "SYM"})
# Children that start a separate proposition, so they are cut out of an argument's span.
CLAUSE_DEPS = frozenset({"relcl", "appos", "acl", "advcl"})
NEGATIONS = frozenset({"not", "n't", "never", "no", "nt"})
RELATIVE_PRONOUNS = frozenset({"who", "which", "that", "whom", "whose"})
PERSONAL_PRONOUNS = frozenset({"i", "me", "you", "he", "him", "she", "her", "we", "us", "they", "them", "it",
                               "myself", "yourself", "himself", "herself"})
FIRST_PERSON = frozenset({"i", "me", "myself"})
SECOND_PERSON = frozenset({"you", "yourself"})
THIRD_PERSON_HUMAN = frozenset({"he", "him", "himself", "she", "her", "herself"})
UNRESOLVED_PRONOUN = "unresolved_pronoun"
DEFAULT_CONFIDENCE = 0.8
STRUCTURED_KINDS = frozenset({"health"})
NLP_BATCH_SIZE = 64
# Per process, texts of at most CACHED_PARSE_CHARS: chat lines, not mail paragraphs (a Doc of 1,600 characters holds
# about 240 KiB, and a backfill's mails would fill the cache for nothing).
CACHED_PARSES = 2048
CACHED_PARSE_CHARS = 600
_parses: OrderedDict[tuple[int, str], Any] = OrderedDict()  # (model, text) -> its Doc, read only
_parses_lock = threading.Lock()
NLP_DISABLE = ("lemmatizer",)  # tagger, parser, attribute_ruler and ner are read; lemmas only for a few tokens
MAX_EPISODES_PER_BATCH = 32


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
    stem: str = ""  # the predicate without the preposition folded into it, for the extras' own triples
    active: str | None = None  # for a passive with a by-agent: its active predicate ("write")
    agent: tuple[int, ...] = ()  # that agent's span
    possessed: tuple[int, ...] = ()  # for a possessive: the thing owned, which CaRB writes as (owner, has, thing)


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


def _subjects(doc: Any, verb: Any) -> list[tuple[int, ...]]:
    """Subject spans of ``verb``: its own, or inherited through coordination, relative or control clauses."""
    for child in verb.children:
        if child.dep_ in SUBJECT_DEPS:
            if child.lower_ in RELATIVE_PRONOUNS and verb.dep_ == "relcl":
                return _arguments(doc, verb.head)
            if child.dep_.startswith("csubj"):
                return [_span(doc, child.i)]
            return _arguments(doc, child)
    if verb.dep_ == "conj" and verb.head.pos_ in VERBAL_POS:
        return _subjects(doc, verb.head)
    if verb.dep_ in ("relcl", "acl") and verb.head.pos_ in NOMINAL_POS:
        return [_span(doc, verb.head.i)]
    if verb.dep_ in ("xcomp", "advcl") and verb.head.pos_ in VERBAL_POS:
        objects = [c for c in verb.head.children if c.dep_ == "dobj"]
        if verb.dep_ == "xcomp" and objects:
            return [_span(doc, objects[0].i)]  # "asked Bob to call": Bob calls
        return _subjects(doc, verb.head)
    return []


def _is_passive(verb: Any) -> bool:
    return verb.tag_ == "VBN" and (verb.dep_ == "acl" or any(c.dep_ in ("auxpass", "nsubjpass") for c in verb.children))


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
            stem = lemma(child)
            modality = child.lower_ if stem in ("will", "would") else stem
    return toks, negated, modality


def _prep_object(doc: Any, prep: Any) -> list[tuple[int, ...]]:
    """Objects of a preposition (one per conjunct), or its clausal complement."""
    for child in prep.children:
        if child.dep_ == "pobj":
            return _arguments(doc, child)
        if child.dep_ == "pcomp":
            return [_span(doc, child.i, cut=frozenset())]
    return []


def _stems(verbs: Sequence[Any], particles: Sequence[Any]) -> tuple[str, str]:
    """(as written, active) lemmatised stems of a verb chain: ("be written", "write"), ("want to visit", same)."""
    written: list[str] = []
    active: list[str] = []
    for n, v in enumerate(verbs):
        if n and any(c.dep_ == "aux" and c.lower_ == "to" for c in v.children):
            written.append("to")
            active.append("to")
        stem = lemma(v).lower()
        written += ["be", v.lower_] if _is_passive(v) else [stem]
        active.append(stem)
    tail = [p.lower_ for p in particles]
    return " ".join(written + tail), " ".join(active + tail)


def _control_chain(verb: Any) -> list[Any]:
    """``verb`` and the object-less control verbs it heads ("wants to visit"): one relation."""
    chain = [verb]
    while not any(c.dep_ in OBJECT_DEPS for c in chain[-1].children):
        xcomps = [c for c in chain[-1].children if c.dep_ == "xcomp" and c.pos_ in VERBAL_POS]
        if not xcomps:
            break
        chain.append(xcomps[0])
    return chain


def _objects(doc: Any, head: Any) -> tuple[list[tuple[int, ...]], bool]:
    """Direct objects, attributes or complements of ``head`` (one per conjunct), and whether "no" negates them."""
    by_dep = {c.dep_: c for c in reversed(list(head.children))}
    for dep in OBJECT_DEPS:
        if dep in by_dep:
            child = by_dep[dep]
            objects = [_span(doc, child.i)] if dep == "acomp" else _arguments(doc, child)
            return objects, any(doc[i].lower_ == "no" and doc[i].dep_ == "det" for i in objects[0])
    for child in head.children:
        if child.dep_ in CLAUSE_OBJECT_DEPS:
            return [_span(doc, child.i, cut=frozenset())], False
    return [], False


def _verb_extractions(doc: Any, verb: Any) -> Iterator[Extraction]:
    """Triples headed by one verb or copula, subjects and objects distributed over their conjuncts."""
    subjects = _subjects(doc, verb)
    if not subjects:
        return
    chain = _control_chain(verb)
    head = chain[-1]
    rel: list[int] = []
    negated, modality = False, None
    for v in chain:
        toks, neg, mod = _relation_tokens(v)
        rel += toks
        negated, modality = negated or neg, modality or mod
    objects, no_object = _objects(doc, head)
    negated = negated or no_object
    agent: tuple[int, ...] = ()
    rel_prep = None
    extras: list[tuple[int, ...]] = []
    for prep in (c for c in head.children if c.dep_ in ("prep", "agent")):
        pobjs = _prep_object(doc, prep)
        if not pobjs:
            continue
        if prep.dep_ == "agent" and _is_passive(head):
            agent = pobjs[0]
        if not objects and rel_prep is None:
            rel_prep, objects = prep, pobjs  # "moved to Friday": the preposition joins the relation
            continue
        extras.append((prep.i, *pobjs[0]))
    extras += [span for c in head.children if c.dep_ in EXTRA_ARG_DEPS if (span := _span(doc, c.i))]
    if not objects:
        return
    relation = tuple(sorted(rel + ([rel_prep.i] if rel_prep is not None else [])))
    stem, active = _stems(chain, [c for c in head.children if c.dep_ == "prt"])
    predicate = f"{stem} {rel_prep.lower_}" if rel_prep is not None else stem
    active_predicate = active if agent else None
    for subject in subjects:
        for obj in objects:
            yield Extraction(subject, relation, predicate, obj, tuple(extras), negated, modality, stem, active_predicate, agent)


def _copular_extractions(doc: Any, noun: Any) -> Iterator[Extraction]:
    """Appositions ("Carol, the CEO of Acme") and possessives ("Alice's manager" gives manager of Alice)."""
    holder = None
    for child in noun.children:
        if child.dep_ == "appos" and child.pos_ != "PRON":
            base = _span(doc, noun.i, skip=frozenset({child.i}))
            yield Extraction(base, (), "be", _span(doc, child.i), stem="be")
            if child.pos_ == "PROPN":
                holder = _span(doc, child.i)  # "Alice's manager, Bob": Bob is the manager
            else:
                yield from _possessive(doc, child, base)
    if noun.dep_ == "appos":
        return
    if holder is None and noun.dep_ == "attr" and lemma(noun.head) == "be":
        subjects = [c for c in noun.head.children if c.dep_ == "nsubj"]
        holder = _span(doc, subjects[0].i) if subjects else None  # "Bob is Alice's manager"
    yield from _possessive(doc, noun, holder)


def _possessive(doc: Any, noun: Any, holder: tuple[int, ...] | None) -> Iterator[Extraction]:
    """``X's N`` gives (holder, N of, X), the holder being the named referent or else the phrase itself."""
    for child in noun.children:
        if child.dep_ != "poss" or child.pos_ == "PRON":
            continue
        owner_span = _span(doc, child.i)
        owner = tuple(i for i in owner_span if doc[i].tag_ != "POS")
        whole = _span(doc, noun.i)
        thing = tuple(i for i in whole if i not in owner_span)
        stem = lemma(noun).lower()
        yield Extraction(holder or whole, (), f"{stem} of", owner, stem=stem, possessed=thing)


def _folded(verb: Any) -> bool:
    """True for an xcomp already folded into its governor's relation by ``_control_chain``."""
    return verb.dep_ == "xcomp" and verb.head.pos_ in VERBAL_POS and verb in _control_chain(verb.head)


def extract(doc: Any) -> list[Extraction]:
    """Every proposition the rules find in a parsed ``doc``, in sentence order."""
    out: list[Extraction] = []
    for tok in doc:
        if tok.pos_ in VERBAL_POS and tok.dep_ not in ("aux", "auxpass") and not _folded(tok):
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
    if ex.possessed:
        return "has", (words(ex.object), words(ex.possessed))
    return (words(ex.relation) or ex.predicate), (words(ex.subject), words(ex.object), *(words(e) for e in ex.extras))


# ---------------------------------------------------------------- rows with provenance and pronoun resolution


@dataclasses.dataclass
class Mentions:
    """An episode's speakers and the people named in earlier units, for resolving pronouns where it is clear."""

    speakers: list[str] = dataclasses.field(default_factory=list)
    people: list[str] = dataclasses.field(default_factory=list)

    def add_speaker(self, sender: str | None) -> None:
        if sender and sender not in self.speakers:
            self.speakers.append(sender)

    def add_people(self, doc: Any) -> None:
        self.people += [ent.text for ent in doc.ents if ent.label_ == "PERSON"]

    def resolve(self, pronoun: Any, sender: str | None) -> str | None:
        """I is the sender; you the one other speaker; he/she the one person named before it; else None.

        Without gender or salience models a third-person pronoun is only clear when a
        single person has been named so far in the episode (the sender aside).
        """
        p = pronoun.lower_
        if p in FIRST_PERSON:
            return sender
        if p in SECOND_PERSON:
            others = {s for s in self.speakers if s != sender}
            return others.pop() if len(others) == 1 else None
        if p in THIRD_PERSON_HUMAN:
            earlier = self.people + [e.text for e in pronoun.doc.ents if e.label_ == "PERSON" and e.end <= pronoun.i]
            named = {n for n in earlier if n != sender}
            return named.pop() if len(named) == 1 else None
        return None


def _argument(doc: Any, idx: tuple[int, ...], sender: str | None, mentions: Mentions) -> tuple[str, bool]:
    """Argument text, a lone personal pronoun replaced by its referent; True when a pronoun stays unresolved."""
    text = text_of(doc, idx)
    if len(idx) == 1 and doc[idx[0]].lower_ in PERSONAL_PRONOUNS:
        who = mentions.resolve(doc[idx[0]], sender)
        return (who, False) if who else (text, True)
    return text, False


def _label(doc: Any, idx: Sequence[int]) -> str | None:
    """The NER label of the argument's syntactic head, if it lies in an entity."""
    inside = set(idx)
    head = next((i for i in idx if doc[i].head.i not in inside or doc[i].head.i == i), None)
    return doc[head].ent_type_ or None if head is not None else None


def _propositions(doc: Any, ex: Extraction) -> list[tuple[tuple[int, ...], str, tuple[int, ...]]]:
    """(subject, predicate, object) index triples of one extraction: the main one in active voice
    when a by-agent is known, then one per further prepositional argument ("send to", "send on")."""
    if ex.active is not None:
        out = [(ex.agent, ex.active, ex.subject)]
    else:
        out = [(ex.subject, ex.predicate, ex.object)]
    for extra in ex.extras:
        prep = doc[extra[0]]
        if prep.dep_ in ("prep", "agent") and len(extra) > 1 and extra[1:] != ex.agent:
            out.append((ex.subject, f"{ex.stem} {prep.lower_}", extra[1:]))
    return out


def triple_rows(
    doc: Any,
    *,
    tenant: str,
    raw_event_id: str,
    event_time: Any = None,
    episode_id: str | None = None,
    sender: str | None = None,
    mentions: Mentions | None = None,
    resolver: EntityResolver | MentionLog | None = None,
    char_offset: int = 0,
) -> list[dict[str, Any]]:
    """``triples`` rows for one parsed unit text (or the part of it that starts at ``char_offset``),
    character offsets relative to the whole unit text.

    Pass the same ``mentions`` for every unit of an episode, in order, so pronouns
    resolve to earlier speakers and names; unresolved ones are flagged.
    """
    mentions = mentions if mentions is not None else Mentions()
    mentions.add_speaker(sender)
    rows = []
    for ex in extract(doc):
        for subj_idx, predicate, obj_idx in _propositions(doc, ex):
            subject, subj_open = _argument(doc, subj_idx, sender, mentions)
            obj, obj_open = _argument(doc, obj_idx, sender, mentions)
            if not subject or not obj:
                continue
            used = [*subj_idx, *ex.relation, *obj_idx]
            char_start = char_offset + min(doc[i].idx for i in used)
            char_end = char_offset + max(doc[i].idx + len(doc[i]) for i in used)
            rows.append(
                {
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
                    "subject_entity_id": resolver.mention(subject, _label(doc, subj_idx), raw_event_id) if resolver else None,
                    "object_entity_id": resolver.mention(obj, _label(doc, obj_idx), raw_event_id) if resolver else None,
                    "raw_event_id": raw_event_id,
                    "char_start": char_start,
                    "char_end": char_end,
                    "flags": [UNRESOLVED_PRONOUN] if subj_open or obj_open else [],
                    "support_count": 1,
                    "last_seen": event_time,
                }
            )
    mentions.add_people(doc)
    return rows


# ---------------------------------------------------------------- episodes and the Beam stage


def _needs_parse(unit: Mapping[str, Any]) -> bool:
    """Free text is parsed; FHIR resources are structured through and through and skip the parser."""
    return bool(unit.get("text")) and unit.get("source_kind") not in STRUCTURED_KINDS


def parse_spans(bundle: Mapping[str, Any]) -> list[list[tuple[int, int]]]:
    """Per unit, the (start, end) parts of its text to parse: the spans the bundle names, else the whole text."""
    spans = bundle.get("spans")
    return [([tuple(span) for span in spans[i]] if spans is not None else [(0, len(unit["text"]))]) if _needs_parse(unit) else []
            for i, unit in enumerate(bundle["units"])]


def parse_texts(bundle: Mapping[str, Any]) -> list[str]:
    """The texts to parse for one bundle, in ``parse_spans`` order: what ``episode_triples`` takes parses of."""
    return [unit["text"][a:b] for unit, spans in zip(bundle["units"], parse_spans(bundle)) for a, b in spans]


def episode_triples(bundle: Mapping[str, Any], docs: Iterable[Any], resolver: EntityResolver | MentionLog) -> list[dict[str, Any]]:
    """``triples`` rows of one episode bundle given the parses of its ``parse_texts``, in order."""
    episode = bundle["episode"]
    mentions = Mentions()
    rows: list[dict[str, Any]] = []
    parsed = iter(docs)
    for unit, spans in zip(bundle["units"], parse_spans(bundle)):
        resolver.speaker(unit.get("sender"), unit["event_id"])
        rows += structured_triples(unit, resolver, episode.get("episode_id"))
        for start, _end in spans:
            rows += triple_rows(
                next(parsed),
                tenant=unit["tenant"],
                raw_event_id=unit["event_id"],
                event_time=unit.get("event_time"),
                episode_id=episode.get("episode_id"),
                sender=_speaker_name(unit.get("sender")),
                mentions=mentions,
                resolver=resolver,
                char_offset=start,
            )
    return rows


def _speaker_name(sender: str | None) -> str | None:
    """The display name of ``Name <addr>`` senders, else the sender as given."""
    if not sender:
        return None
    name, address = split_address(sender)
    return name or address or sender


def cached_parses(nlp: Any, texts: list[str], batch_size: int) -> list[Any]:
    """``nlp.pipe(texts)``, through this process's cache of the last ``CACHED_PARSES`` short texts' parses.

    A stream prepares a conversation's close before its deadline (``pipelines.stream_batches``): the rehearsal
    parses the close's spans, and the close itself, computing the same spans, finds them here. Nothing reads
    a parse but to walk it, so one Doc serves both.
    """
    keys = [(id(nlp), text) for text in texts]
    with _parses_lock:
        found = {key: _parses[key] for key in keys if key in _parses}
        for key in found:
            _parses.move_to_end(key)
    missing = list(dict.fromkeys(key for key in keys if key not in found))
    for key, doc in zip(missing, nlp.pipe((text for _, text in missing), batch_size=batch_size)):
        found[key] = doc
    with _parses_lock:
        for key in missing:
            if len(key[1]) <= CACHED_PARSE_CHARS:
                _parses[key] = found[key]
        while len(_parses) > CACHED_PARSES:
            _parses.popitem(last=False)
    return [found[key] for key in keys]


class _ExtractFn(beam.DoFn):
    """Parses a batch of episode bundles with one ``nlp.pipe`` call and emits each episode's triples and mentions."""

    def __init__(self, model: str, batch_size: int) -> None:
        self._model_name = model
        self._batch_size = batch_size

    def setup(self) -> None:
        self._nlp = spacy_model(self._model_name, disable=NLP_DISABLE)

    def process(self, bundles: list[dict[str, Any]]) -> Iterator[ExtractedEpisode]:
        texts = [parse_texts(b) for b in bundles]
        parsed = iter(cached_parses(self._nlp, [t for ts in texts for t in ts], self._batch_size))
        for bundle, bundle_texts in zip(bundles, texts):
            docs = [next(parsed) for _ in bundle_texts]
            episode, log = bundle["episode"], MentionLog(bundle["units"])
            triples = episode_triples(bundle, docs, log)
            yield ExtractedEpisode(tenant=episode["tenant"], conversation_id=episode.get("conversation_id"),
                                   episode_id=episode["episode_id"], mentions=log.mentions, triples=triples)


class ExtractTriples(beam.PTransform):
    """Episode bundles (with the ``spans`` to parse, optionally) -> one ``ExtractedEpisode`` each: its ``triples``
    rows and the entity mentions they refer to, which ``transforms.entities.ResolveEntities`` turns into entity
    ids and ``entities`` rows."""

    def __init__(self, model: str = DEFAULT_SPACY_MODEL, batch_size: int = NLP_BATCH_SIZE,
                 max_episodes_per_batch: int = MAX_EPISODES_PER_BATCH) -> None:
        super().__init__()
        self._model = model
        self._batch_size = batch_size
        self._max_batch = max_episodes_per_batch

    def expand(self, bundles: Any) -> Any:
        return (
            bundles
            | "BatchEpisodes" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._max_batch)
            | "ParseAndExtract" >> beam.ParDo(_ExtractFn(self._model, self._batch_size))
        )
