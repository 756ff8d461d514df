"""FHIR R4 connector (``fhir:PATH``): Bundle JSON, single-resource JSON and NDJSON bulk exports.

Patient, Encounter, Observation, Condition, MedicationRequest, Immunization,
Procedure, DiagnosticReport and AllergyIntolerance resources become readable
sentences ("Observation: Body Height 178.84 cm (LOINC 8302-2)") with their
structured fields kept in ``attrs`` (codes with their system, value, unit,
reference range, interpretation, onset ...). The effective time is the event
time, the patient is the sender (``Name <Patient/id>`` once the file has named
them, so a memory says whose record it is) and the conversation is patient +
encounter.
Other resource types (billing, organisations) are skipped. Bundle entries are
streamed, so a large bundle is never loaded whole. Reads only.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from memtape.connectors.base import Record, register
from memtape.connectors.sources._common import (
    LimitError,
    RecordError,
    check_text,
    dead_letter,
    each_file,
    limits,
    open_binary,
    parse_iso,
    read_bounded,
    text_lines,
    undecodable,
)
from memtape.connectors.sources._jsonstream import JsonItems
from memtape.schemas.records import RawEvent

_SCHEME = "fhir"
SYSTEM_LABELS = {
    "http://loinc.org": "LOINC",
    "http://snomed.info/sct": "SNOMED",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://unitsofmeasure.org": "UCUM",
}


# small readers of FHIR data types
def reference_id(ref: object) -> str | None:
    """``{"reference": "urn:uuid:X"}`` or ``"Patient/X/_history/2"`` -> ``X``."""
    value = ref.get("reference") if isinstance(ref, dict) else ref
    if not isinstance(value, str) or not value:
        return None
    if value.startswith("urn:uuid:") or value.startswith("urn:oid:"):
        return value.rsplit(":", 1)[1]
    parts = value.split("/_history/")[0].rstrip("/").split("/")
    return parts[-1] or None


def codes(concept: object) -> list[dict]:
    if not isinstance(concept, dict):
        return []
    out = []
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict):
            out.append({k: coding[k] for k in ("system", "code", "display") if coding.get(k) is not None})
    return out


def concept_name(concept: object) -> str:
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for coding in codes(concept):
        if coding.get("display") or coding.get("code"):
            return str(coding.get("display") or coding.get("code"))
    return ""


def code_label(concept: object) -> str:
    """``(LOINC 8302-2)`` for the first coding, empty when there is none."""
    for coding in codes(concept):
        if coding.get("code"):
            system = str(coding.get("system", ""))
            label = SYSTEM_LABELS.get(system) or system.rstrip("/").rsplit("/", 1)[-1] or "code"
            return f" ({label} {coding['code']})"
    return ""


def number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return ("%.2f" % value).rstrip("0").rstrip(".") if abs(value) >= 1 else "%.4g" % value


def fhir_time(value: object) -> datetime:
    """FHIR date, dateTime or instant, including the partial ``YYYY`` and ``YYYY-MM`` forms."""
    if isinstance(value, str) and len(value) in (4, 7) and value[:4].isdigit():
        value = value + "-01" * ((10 - len(value)) // 3)
    return parse_iso(value)


def _first_time(resource: dict, *fields: str) -> datetime | None:
    """The first present time among ``fields`` (``period.start`` style paths allowed)."""
    for name in fields:
        value: object = resource
        for key in name.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            return fhir_time(value)
    return None


def _quantity(q: object) -> tuple[object, str | None]:
    if not isinstance(q, dict):
        return None, None
    return q.get("value"), q.get("unit") or q.get("code")


def _value(resource: dict) -> tuple[object, str | None, str]:
    """(value, unit, readable) of an Observation's ``value[x]``."""
    if "valueQuantity" in resource:
        value, unit = _quantity(resource["valueQuantity"])
        return value, unit, f"{number(value)} {unit or ''}".strip()
    if "valueCodeableConcept" in resource:
        name = concept_name(resource["valueCodeableConcept"])
        return name, None, name
    for key in ("valueString", "valueBoolean", "valueInteger", "valueDateTime", "valueTime"):
        if key in resource:
            return resource[key], None, number(resource[key])
    return None, None, ""


def _reference_range(resource: dict) -> tuple[dict | None, str]:
    ranges = resource.get("referenceRange") or []
    first = ranges[0] if ranges and isinstance(ranges[0], dict) else None
    if first is None:
        return None, ""
    low, low_unit = _quantity(first.get("low"))
    high, high_unit = _quantity(first.get("high"))
    unit = low_unit or high_unit
    kept = {k: v for k, v in (("low", low), ("high", high), ("unit", unit), ("text", first.get("text"))) if v is not None}
    if first.get("text"):
        return kept, str(first["text"])
    bounds = f"{number(low) if low is not None else ''}-{number(high) if high is not None else ''}"
    return kept, f"{bounds} {unit or ''}".strip()


def _interpretation(resource: dict) -> str | None:
    names = [concept_name(c) for c in resource.get("interpretation") or []]
    return ", ".join(n for n in names if n) or None


def _name(resource: dict) -> str:
    for entry in resource.get("name") or []:
        if isinstance(entry, dict):
            if entry.get("text"):
                return str(entry["text"])
            given = " ".join(str(g) for g in entry.get("given") or [])
            return " ".join(p for p in (given, str(entry.get("family") or "")) if p)
    return ""


# one function per resource type: (text, attrs, event time)
def _patient(r: dict) -> tuple[str, dict, datetime | None]:
    name = _name(r)
    born = r.get("birthDate")
    text = f"Patient: {name or r.get('id', 'unknown')}"
    text += "".join(f", {p}" for p in (r.get("gender"), f"born {born}" if born else None) if p)
    died = r.get("deceasedDateTime")
    if died:
        text += f", died {died}"
    return text, {"patient_name": name or None}, fhir_time(born) if born else None


def _encounter(r: dict) -> tuple[str, dict, datetime | None]:
    kind = (r.get("type") or [None])[0]
    reasons = [f"{concept_name(c)}{code_label(c)}" for c in r.get("reasonCode") or []]
    text = f"Encounter: {concept_name(kind) or 'visit'}{code_label(kind)}"
    text += "".join(f", {p}" for p in (r.get("status"), "reason " + "; ".join(reasons) if reasons else None) if p)
    attrs = {"status": r.get("status"), "codes": codes(kind), "end": (r.get("period") or {}).get("end")}
    return text, attrs, _first_time(r, "period.start")


def _observation(r: dict) -> tuple[str, dict, datetime | None]:
    code = r.get("code")
    value, unit, shown = _value(r)
    parts = []
    components = []
    for comp in r.get("component") or []:
        if isinstance(comp, dict):
            c_value, c_unit, c_shown = _value(comp)
            parts.append(f"{concept_name(comp.get('code'))} {c_shown}".strip())
            components.append({"codes": codes(comp.get("code")), "value": c_value, "unit": c_unit})
    rng, rng_text = _reference_range(r)
    interpretation = _interpretation(r)
    text = f"Observation: {concept_name(code)} {shown}".rstrip() + code_label(code)
    if parts:
        text += ": " + ", ".join(parts)
    if rng_text:
        text += f"; reference range {rng_text}"
    if interpretation:
        text += f"; {interpretation}"
    attrs = {"status": r.get("status"), "codes": codes(code), "value": value, "unit": unit,
             "reference_range": rng, "interpretation": interpretation, "components": components or None}
    return text, attrs, _first_time(r, "effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued")


def _clinical_status(r: dict) -> str | None:
    return concept_name(r.get("clinicalStatus")) or None


def _condition(r: dict) -> tuple[str, dict, datetime | None]:
    code = r.get("code")
    onset = r.get("onsetDateTime") or (r.get("onsetPeriod") or {}).get("start")
    abatement = r.get("abatementDateTime") or (r.get("abatementPeriod") or {}).get("start")
    status = _clinical_status(r)
    text = f"Condition: {concept_name(code)}{code_label(code)}"
    text += "".join(f", {p}" for p in (status, f"onset {onset}" if onset else None,
                                       f"abated {abatement}" if abatement else None) if p)
    attrs = {"status": status, "codes": codes(code), "onset": onset, "abatement": abatement}
    return text, attrs, _first_time(r, "onsetDateTime", "onsetPeriod.start", "recordedDate")


def _medication_request(r: dict) -> tuple[str, dict, datetime | None]:
    med = r.get("medicationCodeableConcept")
    name = concept_name(med) or str((r.get("medicationReference") or {}).get("display") or "medication")
    dosage = [str(d.get("text")) for d in r.get("dosageInstruction") or [] if isinstance(d, dict) and d.get("text")]
    text = f"MedicationRequest: {name}{code_label(med)}"
    text += "".join(f", {p}" for p in (r.get("status"), "; ".join(dosage)) if p)
    return text, {"status": r.get("status"), "codes": codes(med)}, _first_time(r, "authoredOn")


def _immunization(r: dict) -> tuple[str, dict, datetime | None]:
    vaccine = r.get("vaccineCode")
    text = f"Immunization: {concept_name(vaccine)}{code_label(vaccine)}"
    text += f", {r['status']}" if r.get("status") else ""
    return text, {"status": r.get("status"), "codes": codes(vaccine)}, _first_time(r, "occurrenceDateTime", "recorded")


def _procedure(r: dict) -> tuple[str, dict, datetime | None]:
    code = r.get("code")
    reasons = [concept_name(c) for c in r.get("reasonCode") or []]
    text = f"Procedure: {concept_name(code)}{code_label(code)}"
    text += "".join(f", {p}" for p in (r.get("status"), "reason " + "; ".join(reasons) if any(reasons) else None) if p)
    attrs = {"status": r.get("status"), "codes": codes(code)}
    return text, attrs, _first_time(r, "performedDateTime", "performedPeriod.start")


def _diagnostic_report(r: dict) -> tuple[str, dict, datetime | None]:
    code = r.get("code")
    results = [str(x.get("display")) for x in r.get("result") or [] if isinstance(x, dict) and x.get("display")]
    text = f"DiagnosticReport: {concept_name(code)}{code_label(code)}"
    text += f", {r['status']}" if r.get("status") else ""
    if results:
        text += ": " + ", ".join(results)
    if r.get("conclusion"):
        text += f". {r['conclusion']}"
    attrs = {"status": r.get("status"), "codes": codes(code)}
    return text, attrs, _first_time(r, "effectiveDateTime", "effectivePeriod.start", "issued")


def _allergy(r: dict) -> tuple[str, dict, datetime | None]:
    code = r.get("code")
    status = _clinical_status(r)
    text = f"AllergyIntolerance: {concept_name(code)}{code_label(code)}"
    text += "".join(f", {p}" for p in (status, f"criticality {r['criticality']}" if r.get("criticality") else None) if p)
    return text, {"status": status, "codes": codes(code)}, _first_time(r, "onsetDateTime", "recordedDate")


MAPPERS: dict[str, Callable[[dict], tuple[str, dict, datetime | None]]] = {
    "Patient": _patient,
    "Encounter": _encounter,
    "Observation": _observation,
    "Condition": _condition,
    "MedicationRequest": _medication_request,
    "Immunization": _immunization,
    "Procedure": _procedure,
    "DiagnosticReport": _diagnostic_report,
    "AllergyIntolerance": _allergy,
}


def resource_event(resource: object, tenant: str, fallback_id: str, max_bytes: int,
                   names: dict[str, str] | None = None) -> RawEvent | None:
    """One FHIR resource as a ``RawEvent``; None for resource types memory does not keep.

    ``names`` maps patient ids to the names their Patient resources gave (it
    learns from Patient resources passed here): a reading names its patient.
    """
    if not isinstance(resource, dict):
        raise RecordError("resource is not a JSON object")
    kind = resource.get("resourceType")
    if not isinstance(kind, str):
        raise RecordError("resource has no resourceType")
    mapper = MAPPERS.get(kind)
    if mapper is None:
        return None
    text, attrs, when = mapper(resource)
    rid = resource.get("id")
    patient = rid if kind == "Patient" else reference_id(resource.get("subject") or resource.get("patient"))
    encounter = rid if kind == "Encounter" else reference_id(resource.get("encounter") or resource.get("context"))
    names = {} if names is None else names
    if kind == "Patient" and patient and attrs.get("patient_name"):
        names[patient] = attrs["patient_name"]
    name = names.get(patient) if patient else None
    attrs = {"resource_type": kind, "resource_id": rid, "patient_id": patient, "patient_name": name, "encounter_id": encounter, **attrs}
    attrs = {k: v for k, v in attrs.items() if v not in (None, [], "")}
    conversation = None
    if patient:
        conversation = f"Patient/{patient}" + (f"/Encounter/{encounter}" if encounter else "")
    return RawEvent(
        tenant=tenant,
        source_kind="health",
        source=_SCHEME,
        source_id=f"{kind}/{rid}" if rid else fallback_id,
        text=check_text(text, max_bytes),
        event_time=when,
        conversation_id=conversation,
        sender=(f"{name} <Patient/{patient}>" if name else f"Patient/{patient}") if patient else None,
        payload=json.dumps(resource, ensure_ascii=False),
        attrs=attrs,
    )


def _letter_or_event(value: object, tenant: str, position: str, max_bytes: int, names: dict[str, str]) -> Record | None:
    try:
        return resource_event(value, tenant, position, max_bytes, names)
    except Exception as exc:  # one bad resource must not stop the bundle
        return dead_letter(tenant, _SCHEME, position, exc, json.dumps(value, default=str)[:4096])


def _read_json(file: Path, tenant: str, max_item: int, max_text: int, names: dict[str, str]) -> Iterator[Record]:
    with open_binary(file) as handle:
        items = JsonItems(handle, [("entry", "*")], max_item)
        for item in items:
            position = f"{file}#{item.position}"
            if item.error is not None:
                yield dead_letter(tenant, _SCHEME, position, item.error, item.raw)
                continue
            resource = item.value.get("resource") if isinstance(item.value, dict) else None
            if resource is None:
                yield dead_letter(tenant, _SCHEME, position, RecordError("bundle entry without a resource"))
                continue
            record = _letter_or_event(resource, tenant, position, max_text, names)
            if record is not None:
                yield record
    if items.items or items.root.get("resourceType") == "Bundle" or items.top != "{":
        return
    with open_binary(file) as handle:  # a single resource, not a bundle
        try:
            resource = json.loads(read_bounded(handle, max_item, "resource file"))
        except (ValueError, LimitError, RecursionError) as exc:
            yield dead_letter(tenant, _SCHEME, str(file), exc)
            return
    record = _letter_or_event(resource, tenant, str(file), max_text, names)
    if record is not None:
        yield record


def _read_ndjson(file: Path, tenant: str, max_item: int, max_text: int, names: dict[str, str]) -> Iterator[Record]:
    with open_binary(file) as handle:
        for lineno, line, oversize in text_lines(handle, max_item):
            position = f"{file}:{lineno}"
            if oversize:
                yield dead_letter(tenant, _SCHEME, position, LimitError("NDJSON line exceeds the size limit"), line[:1024])
                continue
            if not line.strip():
                continue
            try:
                if undecodable(line):
                    raise UnicodeError("line is not valid UTF-8")
                value = json.loads(line)
            except (ValueError, UnicodeError, RecursionError) as exc:
                yield dead_letter(tenant, _SCHEME, position, exc, line)
                continue
            record = _letter_or_event(value, tenant, position, max_text, names)
            if record is not None:
                yield record


def _patient_file(file: Path) -> bool:
    """A bulk export's Patient file is read first, so every other resource can name its patient."""
    return file.name.lower().startswith("patient")


@register(_SCHEME, "health", "FHIR R4 Bundle / resource JSON or NDJSON bulk export")
def read_fhir(path: str, tenant: str) -> Iterator[Record]:
    conf = limits()
    names: dict[str, str] = {}  # patient id -> name, from the Patient resources read so far

    def read_file(file: Path) -> Iterator[Record]:
        reader = _read_ndjson if file.suffix.lower() == ".ndjson" else _read_json
        return reader(file, tenant, conf.max_attachment_bytes, conf.max_message_bytes, names)

    yield from each_file(path, tenant, _SCHEME, read_file, accept={".json", ".ndjson"}, first=_patient_file)
