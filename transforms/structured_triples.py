"""Triples read straight off structured sources: FHIR resources and email headers, no parsing.

A FHIR unit's ``attrs`` (resource_type, patient_name, codes, value, onset ...)
gives facts such as (patient, has_condition, Appendicitis) at the onset time; an
email unit's headers give (Alice, emailed, Bob) per recipient and (Alice,
emailed_about, subject). Every participant and code goes through the
``EntityResolver`` (or a ``MentionLog``, whose references the entity stage
resolves) so the rows carry entity ids. This module builds rows only;
it never reads the source files or the store.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from email.utils import getaddresses
from typing import Any

from memtape.schemas.records import stable_id
from memtape.transforms.entities import EntityRef, EntityResolver, MentionLog, split_address

STRUCTURED_CONFIDENCE = 1.0
# FHIR resource type -> predicate linking the patient to the resource's coded concept.
FHIR_PREDICATES = {
    "Condition": "has_condition",
    "Observation": "has_observation",
    "MedicationRequest": "prescribed",
    "MedicationStatement": "takes",
    "Immunization": "received_immunization",
    "Procedure": "underwent_procedure",
    "Encounter": "had_encounter",
    "DiagnosticReport": "has_report",
    "CarePlan": "has_care_plan",
    "AllergyIntolerance": "allergic_to",
}
RESOLVED_PREDICATE = "recovered_from"  # a Condition with an abatement date
NEGATING_STATUSES = frozenset({"refuted", "entered-in-error"})
PATIENT = "Patient"


def parse_time(value: Any) -> datetime | None:
    """An aware UTC datetime from an ISO date or date-time string (or a datetime), else None."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _attrs(unit: Mapping[str, Any]) -> dict[str, Any]:
    attrs = unit.get("attrs")
    if isinstance(attrs, str):
        return json.loads(attrs) if attrs else {}
    return dict(attrs or {})


def _row(unit: Mapping[str, Any], episode_id: str | None, subject: str, predicate: str, obj: str, when: Any,
         subject_id: EntityRef, object_id: EntityRef, negated: bool = False) -> dict[str, Any]:
    tenant, raw_event_id = unit["tenant"], unit["event_id"]
    return {
        "tenant": tenant,
        "triple_id": stable_id(tenant, raw_event_id, None, subject, predicate, obj, negated),
        "episode_id": episode_id,
        "subject": subject,
        "predicate": predicate,
        "object": obj,
        "negated": negated,
        "modality": None,
        "event_time": when,
        "confidence": STRUCTURED_CONFIDENCE,
        "subject_entity_id": subject_id,
        "object_entity_id": object_id,
        "raw_event_id": raw_event_id,
        "char_start": None,
        "char_end": None,
        "flags": [],
        "support_count": 1,
        "last_seen": when,
    }


def _fhir_object(resource_type: str, attrs: dict[str, Any]) -> str | None:
    """The object text: the first code's display, with the value and unit for an Observation."""
    codes = attrs.get("codes") or []
    display = next((c.get("display") for c in codes if c.get("display")), None) or next((c.get("code") for c in codes if c.get("code")), None)
    if display is None:
        return None
    value = attrs.get("value")
    if resource_type == "Observation" and value not in (None, ""):
        unit = attrs.get("unit")
        return f"{display}: {value} {unit}".strip() if unit else f"{display}: {value}"
    return display


def fhir_triples(unit: Mapping[str, Any], resolver: EntityResolver | MentionLog, episode_id: str | None = None) -> list[dict[str, Any]]:
    """(patient, predicate, concept) for one FHIR resource, timed at onset (or the unit's time), plus recovery."""
    attrs = _attrs(unit)
    resource_type = attrs.get("resource_type") or ""
    predicate = FHIR_PREDICATES.get(resource_type)
    patient_id = attrs.get("patient_id")
    patient = attrs.get("patient_name") or (f"{PATIENT}/{patient_id}" if patient_id else None)
    obj = _fhir_object(resource_type, attrs) if predicate else None
    if predicate is None or patient is None or obj is None:
        return []
    raw_id = unit["event_id"]
    subject_id = resolver.resource(PATIENT, patient_id, attrs.get("patient_name"), raw_id) if patient_id else resolver.person(patient, None, raw_id)
    object_id = resolver.first_of([resolver.concept(code.get("system"), code.get("code"), code.get("display"), resource_type, raw_id)
                                   for code in attrs.get("codes") or []])
    when = parse_time(attrs.get("onset")) or parse_time(unit.get("event_time"))
    negated = attrs.get("status") in NEGATING_STATUSES
    rows = [_row(unit, episode_id, patient, predicate, obj, when, subject_id, object_id, negated)]
    if resource_type == "Condition" and attrs.get("abatement"):
        rows.append(_row(unit, episode_id, patient, RESOLVED_PREDICATE, obj, parse_time(attrs["abatement"]), subject_id, object_id))
    return rows


def _addresses(value: Any) -> Iterable[tuple[str | None, str | None]]:
    """Each (name, address) in a header value: a list, or one comma-separated string."""
    if not value:
        return []
    if isinstance(value, str):
        return [(n or None, a.lower() if a and "@" in a else None) for n, a in getaddresses([value]) if n or a]
    return [split_address(v) for v in value]


def email_triples(unit: Mapping[str, Any], resolver: EntityResolver | MentionLog, episode_id: str | None = None) -> list[dict[str, Any]]:
    """(sender, emailed, recipient) per To address, (sender, cc_emailed, ...) per Cc, (sender, emailed_about, subject)."""
    attrs = _attrs(unit)
    raw_id = unit["event_id"]
    name, address = attrs.get("from_name"), attrs.get("from_address")
    if not (name or address):
        name, address = split_address(unit.get("sender") or "")
    if not (name or address):
        return []
    sender = name or address or ""
    sender_id = resolver.person(name, address, raw_id)
    when = parse_time(unit.get("event_time"))
    rows = []
    for header, predicate in (("to", "emailed"), ("cc", "cc_emailed")):
        for r_name, r_address in _addresses(attrs.get(header)):
            recipient_id = resolver.person(r_name, r_address, raw_id)
            rows.append(_row(unit, episode_id, sender, predicate, r_name or r_address or "", when, sender_id, recipient_id))
    subject = (attrs.get("subject") or "").strip()
    if subject:
        rows.append(_row(unit, episode_id, sender, "emailed_about", subject, when, sender_id, None))
    return rows


def structured_triples(unit: Mapping[str, Any], resolver: EntityResolver | MentionLog, episode_id: str | None = None) -> list[dict[str, Any]]:
    """Triples from a unit's structured attrs: FHIR resources and email headers; [] for anything else."""
    attrs = _attrs(unit)
    if "resource_type" in attrs:
        return fhir_triples(unit, resolver, episode_id)
    if "from_address" in attrs or "message_id" in attrs:
        return email_triples(unit, resolver, episode_id)
    return []
