"""Entity resolution: one ``entities`` row per person, concept or named thing, however it is written.

An entity is keyed by its strongest exact identifier (an email address, a
``system|code`` pair such as a LOINC code) when it has one, else by its
normalised name, and ``entity_id`` is ``stable_id(tenant, key)`` so re-running
gives the same ids. Aliases join an entity by normalisation ("Skilling, Jeff",
"jeff skilling" and "Jeff Skilling" are one name) and by identifier (an address
and the display name seen with it; a code and its display).

Which entity a name means depends on what came before it, so resolution is
one stage, ``ResolveEntities``: extractors record their mentions in a
``MentionLog`` without ids, and the stage replays every mention of a state
scope (the tenant) in event order through one ``EntityResolver`` whose
mapping is carried between runs as state. One run, many runs or micro-batches
over the same input thus give the same ids. This module computes; it never
reads or writes the store.
"""
from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from collections import OrderedDict
from email.utils import parseaddr
from typing import Any, Callable, Iterable, Iterator, Mapping

import apache_beam as beam

from memtape.schemas.records import ExtractedEpisode, Mention, stable_id
from memtape.transforms.dedupe import event_order

LEADING_DETERMINERS = ("the ", "a ", "an ")
MAX_MENTION_WORDS = 8  # longer arguments are descriptions, not names worth an entity
SPEAKER = "speaker"
PERSON = "person"
EMAIL_ADDRESS = "email_address"
WEAK_TYPES = frozenset({None, SPEAKER, EMAIL_ADDRESS})  # types any labelled mention improves on
# Bounds of the carried state per scope, least recently seen forgotten first. A forgotten entity keeps its id
# (the id is its key: the identifier or normalised name); what is lost is a link from a name to an identifier's
# entity, so a later bare name starts its own entity, as it would for a tenant seen for the first time.
MAX_CARRIED_ENTITIES = 20_000
MAX_CARRIED_ALIASES = 40_000
MAX_CARRIED_IDENTIFIERS = 20_000
STATE = "state"
ENTITIES = "entities"
REF_FIELDS = ("subject_entity_id", "object_entity_id")  # triple fields that hold EntityRefs until resolved
# An entity id; while extracting, the index of a recorded mention, or the indices of which the first that names an
# entity counts (see MentionLog).
EntityRef = str | int | list[int] | None
_NON_WORD = re.compile(r"[^\w@.+\-' ]+")
_POSSESSIVE = re.compile(r"['’]s\b")


def normalise(name: str) -> str:
    """Casefolded, accent-stable, punctuation-light form of a name; "Last, First" becomes "first last"."""
    text = unicodedata.normalize("NFKC", name).casefold().strip()
    if text.count(",") == 1 and "@" not in text:
        last, first = (part.strip() for part in text.split(","))
        if last and first and len(last.split()) <= 2 and len(first.split()) <= 2:
            text = f"{first} {last}"
    text = _POSSESSIVE.sub("", text)
    text = " ".join(_NON_WORD.sub(" ", text).split()).strip(".'- ")
    for det in LEADING_DETERMINERS:
        if text.startswith(det):
            text = text[len(det):]
    return text


def split_address(value: Any) -> tuple[str | None, str | None]:
    """(display name, lowercased address) from ``"Name <addr>"``, a bare address or ``{"name", "address"}``."""
    if isinstance(value, dict):
        name, addr = value.get("name"), value.get("address") or value.get("email")
    else:
        name, addr = parseaddr(str(value))
    addr = addr.strip().lower() if addr and "@" in addr else None
    name = name.strip().strip('"').strip() if name else None
    return name or None, addr


def better_name(current: str, candidate: str) -> str:
    """A display name reads better than the address it came with; otherwise the first name stays."""
    return candidate if "@" in current and "@" not in candidate else current


def better_type(current: str | None, candidate: str | None) -> str | None:
    """A labelled type (person, PERSON, ORG, a FHIR resource ...) wins over none, speaker or email address."""
    return candidate if current in WEAK_TYPES and candidate not in WEAK_TYPES else current


def _remember(recent: OrderedDict, key: str, value: Any, limit: int) -> None:
    """Set ``key`` as the most recently seen entry, forgetting the least recently seen beyond ``limit``."""
    recent[key] = value
    recent.move_to_end(key)
    while len(recent) > limit:
        recent.popitem(last=False)


@dataclasses.dataclass
class _Entity:
    """An entity's row as this resolver has seen it: names, identifiers and events of its own mentions."""

    key: str
    canonical_name: str
    entity_type: str | None
    aliases: list[str] = dataclasses.field(default_factory=list)
    identifiers: list[str] = dataclasses.field(default_factory=list)
    raw_event_ids: list[str] = dataclasses.field(default_factory=list)


class EntityResolver:
    """Maps every mention of one scope to its ``entity_id``, carrying the mapping in ``state_json``.

    Identifiers win over names: a name first seen alone and later seen with an
    address joins the address's entity from then on (earlier rows keep the name id).
    The carried state holds only what resolution needs (each entity's name and
    type, and the name and identifier links), bounded by the ``MAX_CARRIED_*``
    constants; rows hold the aliases, identifiers and events seen by this
    resolver, and the store's ``merge_entity`` unions them with earlier runs'.
    """

    def __init__(self, tenant: str, state_json: str | None = None) -> None:
        self.tenant = tenant
        state = json.loads(state_json) if state_json else {}
        self._known: OrderedDict[str, tuple[str, str | None]] = OrderedDict(
            (key, (name, kind)) for key, name, kind in state.get("entities", []))
        self._by_alias: OrderedDict[str, str] = OrderedDict(state.get("aliases", []))
        self._by_identifier: OrderedDict[str, str] = OrderedDict(state.get("identifiers", []))
        self._seen: dict[str, _Entity] = {}
        self._touched: set[str] = set()

    def entity_id(self, key: str) -> str:
        return stable_id(self.tenant, key)

    def state_json(self) -> str:
        """The carried mapping, each part least recently seen first, so the bounds keep forgetting in order."""
        return json.dumps({"entities": [[k, n, t] for k, (n, t) in self._known.items()],
                           "aliases": list(self._by_alias.items()), "identifiers": list(self._by_identifier.items())})

    def _link_alias(self, name: str, key: str, replace: bool) -> None:
        norm = normalise(name)
        _remember(self._by_alias, norm, key if replace else self._by_alias.get(norm, key), MAX_CARRIED_ALIASES)

    def _upsert(self, key: str, name: str, entity_type: str | None, raw_event_id: str | None, identifiers: tuple[str, ...] = ()) -> str:
        known = self._known.get(key)
        canonical, kind = (better_name(known[0], name), better_type(known[1], entity_type)) if known else (name, entity_type)
        _remember(self._known, key, (canonical, kind), MAX_CARRIED_ENTITIES)
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = _Entity(key, canonical, kind)
        else:  # after the bound forgot it, the carried name restarts: keep the row's as the store's merge would
            seen.canonical_name, seen.entity_type = better_name(seen.canonical_name, canonical), better_type(seen.entity_type, kind)
        if name not in seen.aliases:
            seen.aliases.append(name)
        self._link_alias(name, key, replace=False)
        for ident in identifiers:
            if ident not in seen.identifiers:
                seen.identifiers.append(ident)
            _remember(self._by_identifier, ident, key, MAX_CARRIED_IDENTIFIERS)
        if raw_event_id and raw_event_id not in seen.raw_event_ids:
            seen.raw_event_ids.append(raw_event_id)
        self._touched.add(key)
        return self.entity_id(key)

    def person(self, name: str | None, address: str | None, raw_event_id: str | None = None, entity_type: str = PERSON) -> str | None:
        """A person by email address and/or display name; the address is the key when present."""
        address = address.lower() if address else None
        if address:
            key = self._by_identifier.get(address) or f"email:{address}"
            if name:
                self._link_alias(name, key, replace=True)
            out = self._upsert(key, address, entity_type if name else EMAIL_ADDRESS, raw_event_id, (address,))
            if name:
                self._upsert(key, name, entity_type, raw_event_id)
            return out
        if not name:
            return None
        key = self._by_alias.get(normalise(name)) or f"name:{normalise(name)}"
        return self._upsert(key, name, entity_type, raw_event_id)

    def speaker(self, sender: str | None, raw_event_id: str | None = None) -> str | None:
        """The sender of a unit: an address, ``Name <addr>``, or a bare display name."""
        if not sender:
            return None
        name, address = split_address(sender)
        if address is None:
            name = sender.strip()
        return self.person(name, address, raw_event_id, SPEAKER)

    def concept(self, system: str | None, code: str | None, display: str | None, entity_type: str, raw_event_id: str | None = None) -> str | None:
        """A coded concept (LOINC, SNOMED, RxNorm ...): ``system|code`` is the key, the display an alias."""
        if code:
            ident = f"{system or ''}|{code}"
            key = self._by_identifier.get(ident) or f"code:{ident}"
            return self._upsert(key, display or code, entity_type, raw_event_id, (ident,))
        return self.mention(display, entity_type, raw_event_id) if display else None

    def resource(self, resource_type: str, resource_id: str, name: str | None, raw_event_id: str | None = None) -> str:
        """A FHIR resource such as a Patient, keyed by its id, with its display name as an alias."""
        ident = f"{resource_type}/{resource_id}"
        key = self._by_identifier.get(ident) or f"fhir:{ident}"
        if name:
            self._link_alias(name, key, replace=True)
        return self._upsert(key, name or ident, resource_type, raw_event_id, (ident,))

    def mention(self, text: str | None, label: str | None, raw_event_id: str | None = None) -> str | None:
        """The entity a free-text argument names: a known alias, or a new one when NER labelled it."""
        if not text:
            return None
        norm = normalise(text)
        if not norm:
            return None
        key = self._by_alias.get(norm)
        if key is None:
            if label is None or len(norm.split()) > MAX_MENTION_WORDS:
                return None
            key = f"name:{norm}"
        return self._upsert(key, text, label, raw_event_id)

    @staticmethod
    def first_of(ids: list[Any]) -> str | None:
        """The first of several candidate ids that names an entity (a FHIR resource's codes: its first known concept)."""
        return next((i for i in ids if i), None)

    def rows(self, touched_only: bool = False) -> list[dict[str, Any]]:
        """``entities`` rows of every entity this resolver saw (or of those touched since the last ``touched_only`` call)."""
        keys = sorted(self._touched) if touched_only else sorted(self._seen)
        if touched_only:
            self._touched.clear()
        return [
            {
                "tenant": self.tenant,
                "entity_id": self.entity_id(e.key),
                "canonical_name": e.canonical_name,
                "entity_type": e.entity_type,
                "aliases": list(e.aliases),
                "identifiers": list(e.identifiers),
                "raw_event_ids": list(e.raw_event_ids),
            }
            for e in (self._seen[k] for k in keys)
        ]


# ---------------------------------------------------------------- mentions recorded by extractors, resolved in one stage


class MentionLog:
    """Stands in for an ``EntityResolver`` while extracting: records each call and returns its index, a reference
    ``ResolveEntities`` replaces with the entity id once it knows what came before."""

    def __init__(self, units: Iterable[Mapping[str, Any]]) -> None:
        self._order = {u["event_id"]: event_order(u) for u in units}
        self.mentions: list[Mention] = []

    def _record(self, method: str, raw_event_id: str | None, args: tuple[Any, ...]) -> int:
        """Keep the call (``args`` in the resolver method's own order) and return its index."""
        position = len(self.mentions)
        order = self._order.get(raw_event_id or "", (False, 0.0, raw_event_id or ""))
        self.mentions.append(Mention((*order, position), method, args))
        return position

    def person(self, name: str | None, address: str | None, raw_event_id: str | None = None, entity_type: str = PERSON) -> int:
        return self._record("person", raw_event_id, (name, address, raw_event_id, entity_type))

    def speaker(self, sender: str | None, raw_event_id: str | None = None) -> int:
        return self._record("speaker", raw_event_id, (sender, raw_event_id))

    def concept(self, system: str | None, code: str | None, display: str | None, entity_type: str, raw_event_id: str | None = None) -> int:
        return self._record("concept", raw_event_id, (system, code, display, entity_type, raw_event_id))

    def resource(self, resource_type: str, resource_id: str, name: str | None, raw_event_id: str | None = None) -> int:
        return self._record("resource", raw_event_id, (resource_type, resource_id, name, raw_event_id))

    def mention(self, text: str | None, label: str | None, raw_event_id: str | None = None) -> int:
        return self._record("mention", raw_event_id, (text, label, raw_event_id))

    @staticmethod
    def first_of(refs: list[Any]) -> list[int]:
        return list(refs)


RECORDED_CALLS = frozenset({"person", "speaker", "concept", "resource", "mention"})


def _replay(resolver: EntityResolver, mention: Mention) -> str | None:
    """The id the resolver gives a recorded call."""
    if mention.method not in RECORDED_CALLS:
        raise ValueError(f"not an EntityResolver call: {mention.method!r}")
    method: Callable[..., str | None] = getattr(resolver, mention.method)
    return method(*mention.args)


def resolve(resolver: EntityResolver, episodes: list[ExtractedEpisode]) -> Iterator[dict[str, Any]]:
    """Replay the episodes' mentions in event order (ties in the order they were made) and yield their triples with ids."""
    calls = sorted(((m.order, e["episode_id"], n, j) for n, e in enumerate(episodes) for j, m in enumerate(e["mentions"])))
    ids: dict[tuple[int, int], str | None] = {}
    for _order, _episode, n, j in calls:
        ids[(n, j)] = _replay(resolver, episodes[n]["mentions"][j])
    for n, episode in enumerate(episodes):
        for triple in episode["triples"]:
            yield {**triple, **{field: _resolved(triple[field], n, ids) for field in REF_FIELDS}}


def _resolved(ref: EntityRef, episode: int, ids: dict[tuple[int, int], str | None]) -> str | None:
    """The entity id a reference of the ``episode``-th episode stands for (for a list, the first that names an entity)."""
    if isinstance(ref, list):
        return next((i for i in (ids[(episode, j)] for j in ref) if i), None)
    return ids[(episode, ref)] if isinstance(ref, int) else ref


class _ResolveScopeFn(beam.DoFn):
    """Resolves one scope's episodes of a run against the state carried for that scope."""

    def process(self, element: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[Any]:
        scope, grouped = element
        episodes = list(grouped["episodes"])
        if not episodes:  # the carried state of a scope with nothing new stays as it is
            return
        resolver = EntityResolver(episodes[0]["tenant"], next(iter(grouped["state"]), None))
        yield from resolve(resolver, episodes)
        for row in resolver.rows():
            yield beam.pvalue.TaggedOutput(ENTITIES, row)
        yield beam.pvalue.TaggedOutput(STATE, (scope, resolver.state_json()))


class ResolveEntities(beam.PTransform):
    """``{"episodes": ExtractedEpisode, "state": (scope, payload)}`` -> triples with entity ids (main), ``entities``
    rows (one per entity the run touched) and the new ``state`` pairs.

    All episodes of a state scope (the tenant unless ``scope_of`` says
    otherwise) meet in one keyed step, so however many workers extracted them,
    one resolver sees them all, in event order, after the carried state.
    """

    def __init__(self, scope_of: Callable[[dict[str, Any]], str] | None = None) -> None:
        super().__init__()
        self._scope_of = scope_of or _tenant_of

    def expand(self, inputs: dict[str, beam.PCollection]) -> Any:
        return (
            {"episodes": inputs["episodes"] | "KeyByScope" >> beam.Map(lambda e, key=self._scope_of: (key(e), e)),
             "state": inputs["state"]}
            | "GroupByScope" >> beam.CoGroupByKey()
            | "ResolveInEventOrder" >> beam.ParDo(_ResolveScopeFn()).with_outputs(ENTITIES, STATE, main="triples")
        )


def _tenant_of(element: dict[str, Any]) -> str:
    return element["tenant"]
