"""Whom a recall is about: the people a tenant's memories are about, and the ones a query names.

Each memory lists its subjects as the source named them (``Name <id>``: a
patient with their FHIR id, a correspondent with their address, a chat
participant by name). Subjects that share a full name, an address or an id are
one person. A query names a person when a run of its words is one of that
person's names, addresses or ids; a lone first name counts only when it is
capitalised in the query and belongs to one person. Recall restricts its
candidates to the memories about the person a query names, unless it names
several. This module only reads what it is given; it never touches the store.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Sequence

from memtape.transforms.entities import normalise
from memtape.transforms.tokens import STOPWORDS

_ANGLE = re.compile(r"^\s*(.*?)\s*<([^<>]+)>\s*$")
_QUERY_TOKEN = re.compile(r"[\w@./-]+")
_POSSESSIVE = re.compile(r"['\u2019]s\b", re.I)
MAX_NAME_WORDS = 4


def aliases(subject: str) -> tuple[set[str], set[str]]:
    """(strong, weak) aliases of one subject: full names, addresses and ids; first names alone.

    Strong aliases identify a person (two subjects sharing one are the same
    person); a first name only suggests one.
    """
    match = _ANGLE.match(subject)
    name, ident = (match.group(1).strip('" '), match.group(2).strip()) if match else (subject.strip(), "")
    if not ident and ("@" in name or "/" in name):
        name, ident = "", name
    strong: set[str] = set()
    weak: set[str] = set()
    if ident:
        strong.add(ident.casefold())
        if "/" in ident:  # a FHIR reference: the bare id names the patient too
            strong.add(ident.rsplit("/", 1)[-1].casefold())
        if "@" in ident and not name:  # an address alone: its local part is the name it gives
            name = ident.split("@", 1)[0].replace(".", " ").replace("_", " ")
    key = normalise(name) if name else ""
    if key:
        strong.add(key)
        first = key.split()[0]
        if len(key.split()) > 1 and first not in STOPWORDS and len(first) > 1:
            weak.add(first)
    return strong, weak


@dataclasses.dataclass
class People:
    """A tenant's subjects grouped into people, and the aliases that name them."""

    subjects_of: list[list[str]]  # person -> the subject strings that are this person
    strong: dict[str, set[int]]  # alias -> people
    weak: dict[str, set[int]]

    @classmethod
    def build(cls, subjects: Iterable[str]) -> "People":
        distinct = sorted(set(subjects))
        parent = list(range(len(distinct)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        owner: dict[str, int] = {}
        weak_of: list[set[str]] = []
        for i, subject in enumerate(distinct):
            strong, weak = aliases(subject)
            weak_of.append(weak)
            for alias in strong:
                if alias in owner:
                    parent[root(i)] = root(owner[alias])
                else:
                    owner[alias] = i
        person_of: dict[int, int] = {}
        groups: list[list[str]] = []
        for i, subject in enumerate(distinct):
            person = person_of.setdefault(root(i), len(groups))
            if person == len(groups):
                groups.append([])
            groups[person].append(subject)
        strong_index: dict[str, set[int]] = {}
        for alias, i in owner.items():
            strong_index.setdefault(alias, set()).add(person_of[root(i)])
        weak_index: dict[str, set[int]] = {}
        for i, weak in enumerate(weak_of):
            for alias in weak:
                weak_index.setdefault(alias, set()).add(person_of[root(i)])
        return cls(groups, strong_index, weak_index)

    def named_in(self, query: str) -> list[int]:
        """The people a query names, by its longest runs of words that are a name, address or id."""
        tokens = [t.strip("./-") for t in _QUERY_TOKEN.findall(_POSSESSIVE.sub("", query))]
        tokens = [t for t in tokens if t]
        found: list[int] = []
        used = [False] * len(tokens)
        for n in range(min(MAX_NAME_WORDS, len(tokens)), 0, -1):
            for i in range(len(tokens) - n + 1):
                if any(used[i:i + n]):
                    continue
                words = tokens[i:i + n]
                key = normalise(" ".join(words))
                if n == 1:
                    word = words[0]
                    # One word names someone only when it looks like a name (capitalised) or an id or address.
                    if not (word[:1].isupper() or any(c.isdigit() or c in "@/_" for c in word)):
                        continue
                    people = self.strong.get(word.casefold()) or self.strong.get(key) or self.weak.get(key)
                else:
                    people = self.strong.get(key)
                if people and len(people) == 1:
                    used[i:i + n] = [True] * n
                    found.extend(p for p in people if p not in found)
        return found

    def resolve(self, name_or_id: str) -> list[int]:
        """The people an explicit ``subject`` names: by any alias, else as words of a query."""
        key = name_or_id.strip()
        for alias in (key.casefold(), normalise(key)):
            if alias in self.strong:
                return sorted(self.strong[alias])
        return self.named_in(key)

    def subjects(self, people: Sequence[int]) -> tuple[str, ...]:
        """Every subject string of ``people``: what the memories' ``subjects`` column holds for them."""
        return tuple(s for p in people for s in self.subjects_of[p])

    def display(self, person: int) -> str:
        return max(self.subjects_of[person], key=len)
