"""Entity canonicalisation: one ``entities`` row per person, concept or named thing, however it is written.

An entity is keyed by its strongest exact identifier (an email address, a
``system|code`` pair such as a LOINC code) when it has one, else by its
normalised name, and ``entity_id`` is ``stable_id(tenant, key)`` so re-running
gives the same ids. Aliases join an entity by normalisation ("Skilling, Jeff",
"jeff skilling" and "Jeff Skilling" are one name) and by identifier (an address
and the display name seen with it; a code and its display). This module only
keeps the mapping in memory and emits rows; it never reads or writes the store.
"""
from __future__ import annotations

import dataclasses
import re
import unicodedata
from email.utils import parseaddr
from typing import Any

from memtape.schemas.records import stable_id

LEADING_DETERMINERS = ("the ", "a ", "an ")
MAX_MENTION_WORDS = 8  # longer arguments are descriptions, not names worth an entity
SPEAKER = "speaker"
PERSON = "person"
EMAIL_ADDRESS = "email_address"
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


@dataclasses.dataclass
class _Entity:
    key: str
    canonical_name: str
    entity_type: str | None
    aliases: list[str] = dataclasses.field(default_factory=list)
    identifiers: list[str] = dataclasses.field(default_factory=list)
    raw_event_ids: list[str] = dataclasses.field(default_factory=list)


class EntityResolver:
    """Accumulates entities for one tenant and maps every mention to its ``entity_id``.

    Identifiers win over names: a name first seen alone and later seen with an
    address joins the address's entity from then on (earlier rows keep the name id).
    """

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self._entities: dict[str, _Entity] = {}
        self._by_alias: dict[str, str] = {}
        self._by_identifier: dict[str, str] = {}
        self._touched: set[str] = set()

    def entity_id(self, key: str) -> str:
        return stable_id(self.tenant, key)

    def _upsert(self, key: str, name: str, entity_type: str | None, raw_event_id: str | None, identifiers: tuple[str, ...] = ()) -> str:
        entity = self._entities.get(key)
        if entity is None:
            entity = self._entities[key] = _Entity(key, name, entity_type)
        if entity.entity_type in (None, SPEAKER, EMAIL_ADDRESS) and entity_type not in (None, SPEAKER, EMAIL_ADDRESS):
            entity.entity_type = entity_type
        if "@" in entity.canonical_name and "@" not in name:
            entity.canonical_name = name  # a display name reads better than the address it came with
        if name not in entity.aliases:
            entity.aliases.append(name)
        self._by_alias.setdefault(normalise(name), key)
        for ident in identifiers:
            if ident not in entity.identifiers:
                entity.identifiers.append(ident)
            self._by_identifier[ident] = key
        if raw_event_id and raw_event_id not in entity.raw_event_ids:
            entity.raw_event_ids.append(raw_event_id)
        self._touched.add(key)
        return self.entity_id(key)

    def person(self, name: str | None, address: str | None, raw_event_id: str | None = None, entity_type: str = PERSON) -> str | None:
        """A person by email address and/or display name; the address is the key when present."""
        address = address.lower() if address else None
        if address:
            key = self._by_identifier.get(address) or f"email:{address}"
            if name:
                self._by_alias[normalise(name)] = key
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
            self._by_alias[normalise(name)] = key
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

    def rows(self, touched_only: bool = False) -> list[dict[str, Any]]:
        """``entities`` rows for every entity (or those touched since the last call with ``touched_only``)."""
        keys = sorted(self._touched) if touched_only else sorted(self._entities)
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
            for e in (self._entities[k] for k in keys)
        ]
