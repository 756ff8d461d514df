"""FHIR resources and email headers give exact triples without parsing, and their entities merge by identifier."""
from __future__ import annotations

import email
import json
from datetime import datetime, timezone
from email.utils import getaddresses
from pathlib import Path

import pytest

from memtape.schemas import conform
from memtape.schemas.records import stable_id
from memtape.transforms.entities import EntityResolver, normalise
from memtape.transforms.structured_triples import structured_triples

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data absent: FHIR and Enron samples not checked out")


def _codes(concept: dict) -> list[dict]:
    return [{"system": c.get("system"), "code": c.get("code"), "display": c.get("display")} for c in concept.get("coding", [])]


def _fhir_units(path: Path) -> tuple[str, list[dict]]:
    """Units as the FHIR connector writes them: one per resource, attrs with the issue's keys."""
    resources = [e["resource"] for e in json.loads(path.read_text())["entry"]]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    name = patient["name"][0]
    patient_name = " ".join([*name.get("given", []), name["family"]])
    units = []
    for r in resources:
        code = r.get("code") or r.get("vaccineCode") or r.get("medicationCodeableConcept") or {}
        attrs = {
            "resource_type": r["resourceType"],
            "resource_id": r["id"],
            "patient_id": patient["id"],
            "patient_name": patient_name,
            "status": r.get("status"),
            "codes": _codes(code),
            "value": r.get("valueQuantity", {}).get("value"),
            "unit": r.get("valueQuantity", {}).get("unit"),
            "onset": r.get("onsetDateTime"),
            "abatement": r.get("abatementDateTime"),
        }
        when = r.get("effectiveDateTime") or r.get("onsetDateTime") or r.get("occurrenceDateTime") or r.get("authoredOn")
        units.append(
            {
                "tenant": "t",
                "event_id": stable_id("t", "fhir", r["id"]),
                "sender": None,
                "event_time": datetime.fromisoformat(when) if when else None,
                "text": None,
                "source_kind": "health",
                "attrs": json.dumps(attrs),
            }
        )
    return patient_name, list(zip(resources, units))


@needs_shared
def test_fhir_condition_gives_has_condition_since_onset_and_recovery_at_abatement():
    path = sorted((SHARED / "health" / "fhir").glob("*.json"))[0]
    patient, pairs = _fhir_units(path)
    resolver = EntityResolver("t")
    resource, unit = next((r, u) for r, u in pairs if r["resourceType"] == "Condition" and r.get("abatementDateTime"))
    rows = structured_triples(unit, resolver, "ep")
    display = resource["code"]["coding"][0]["display"]
    onset = datetime.fromisoformat(resource["onsetDateTime"]).astimezone(timezone.utc)
    abatement = datetime.fromisoformat(resource["abatementDateTime"]).astimezone(timezone.utc)
    assert [(r["subject"], r["predicate"], r["object"], r["event_time"]) for r in rows] == [
        (patient, "has_condition", display, onset),
        (patient, "recovered_from", display, abatement),
    ]
    assert all(r["negated"] is False and r["raw_event_id"] == unit["event_id"] for r in rows)
    conform("triples", rows)


@needs_shared
def test_fhir_observation_value_and_loinc_display_are_one_concept():
    path = sorted((SHARED / "health" / "fhir").glob("*.json"))[0]
    patient, pairs = _fhir_units(path)
    resolver = EntityResolver("t")
    observations = [(r, u) for r, u in pairs if r["resourceType"] == "Observation" and "valueQuantity" in r]
    resource, unit = observations[0]
    coding = resource["code"]["coding"][0]
    row = structured_triples(unit, resolver)[0]
    q = resource["valueQuantity"]
    assert (row["subject"], row["predicate"], row["object"]) == (patient, "has_observation", f"{coding['display']}: {q['value']} {q['unit']}")
    same_code = [(r, u) for r, u in observations if r["code"]["coding"][0]["code"] == coding["code"]]
    ids = {structured_triples(u, resolver)[0]["object_entity_id"] for _, u in same_code}
    assert ids == {row["object_entity_id"]}
    entity = next(e for e in resolver.rows() if e["entity_id"] == row["object_entity_id"])
    assert entity["identifiers"] == [f"{coding['system']}|{coding['code']}"]
    assert coding["display"] in entity["aliases"]
    patient_entity = next(e for e in resolver.rows() if e["entity_id"] == row["subject_entity_id"])
    assert patient_entity["canonical_name"] == patient and patient_entity["entity_type"] == "Patient"
    conform("entities", resolver.rows())


def _email_unit(path: Path) -> tuple[email.message.Message, dict]:
    msg = email.message_from_binary_file(path.open("rb"))
    attrs = {
        "subject": msg["Subject"],
        "message_id": msg["Message-ID"],
        "from_address": msg["From"],
        "from_name": (msg["X-From"] or "").strip() or None,
        "to": [a for _, a in getaddresses([msg["To"] or ""]) if a],
        "cc": [a for _, a in getaddresses([msg["Cc"] or ""]) if a],
    }
    unit = {"tenant": "t", "event_id": stable_id("t", "mbox", msg["Message-ID"]), "sender": msg["From"],
            "event_time": None, "text": "", "source_kind": "email", "attrs": json.dumps(attrs)}
    return msg, unit


@needs_shared
def test_email_headers_give_emailed_cc_and_about_triples():
    msg, unit = _email_unit(SHARED / "email" / "skilling-j" / "inbox" / "10.")
    resolver = EntityResolver("t")
    got = [(r["subject"], r["predicate"], r["object"]) for r in structured_triples(unit, resolver)]
    assert got == [
        ("Glenn Dubin", "emailed", "gdubin@houstontech.org"),
        *[("Glenn Dubin", "cc_emailed", a) for a in ["amaniar@houstontech.org", "ghancock@houstontech.org",
                                                 "jrusso@houstontech.org", "mmarolo@houstontech.org", "pfrison@houstontech.org"]],
        ("Glenn Dubin", "emailed_about", "HAN Opportunity-SnapStream Media:"),
    ]


@needs_shared
def test_email_address_and_display_name_are_one_person():
    _, unit = _email_unit(SHARED / "email" / "skilling-j" / "inbox" / "100.")
    resolver = EntityResolver("t")
    row = structured_triples(unit, resolver)[0]
    assert (row["subject"], row["predicate"], row["object"]) == ("J. Paul Oxer", "emailed", "jeff.skilling@enron.com")
    person = next(e for e in resolver.rows() if e["entity_id"] == row["subject_entity_id"])
    assert person["identifiers"] == ["j..oxer@enron.com"] and "J. Paul Oxer" in person["aliases"]
    assert resolver.mention("J. Paul Oxer", "PERSON") == row["subject_entity_id"]
    assert resolver.speaker("J. Paul Oxer <j..oxer@enron.com>") == row["subject_entity_id"]


def test_names_merge_by_normalisation():
    resolver = EntityResolver("t")
    a = resolver.person("Skilling, Jeff", "jeff.skilling@enron.com")
    assert resolver.mention("Jeff Skilling", "PERSON") == a
    assert resolver.mention("jeff  skilling", None) == a
    assert normalise("The Acme Corp.") == "acme corp"
    assert resolver.mention("a long description of something that is not any name at all really", None) is None


def test_units_without_structured_attrs_give_no_triples():
    unit = {"tenant": "t", "event_id": "e", "attrs": json.dumps({"thread": "x"}), "text": "hi"}
    assert structured_triples(unit, EntityResolver("t")) == []
