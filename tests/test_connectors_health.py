"""Health connectors: Synthea FHIR bundles spot-checked against the files, NDJSON, and lab CSVs."""
from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from memtape.connectors.base import read_source
from memtape.schemas import conform
from memtape.schemas.records import DeadLetter, RawEvent

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FHIR = SHARED / "health" / "fhir"
BUNDLE = FHIR / "patient-0c6b1f3d-edb2-422b-a0af-a262fb90ed07.json"
PATIENT = "d67a0cff-8f7e-46f7-bb99-577a6623e59a"
needs_fhir = pytest.mark.skipif(not FHIR.exists(), reason="../shared/data absent: Synthea FHIR bundles not available")


@pytest.fixture(scope="module")
def bundle_events() -> dict[str, RawEvent]:
    return {r.source_id: r for r in read_source(f"fhir:{BUNDLE}", "t")} if FHIR.exists() else {}


@needs_fhir
def test_observation_keeps_value_unit_code_time_and_patient_encounter_thread(bundle_events):
    obs = bundle_events["Observation/e57feb36-4d9e-42eb-988a-429beb3b9027"]
    assert obs.text == "Observation: Body Height 178.84 cm (LOINC 8302-2)"
    assert obs.attrs["value"] == 178.83981355877862 and obs.attrs["unit"] == "cm"
    assert obs.attrs["codes"] == [{"system": "http://loinc.org", "code": "8302-2", "display": "Body Height"}]
    assert obs.event_time == datetime(2011, 11, 30, 1, 23, 28, tzinfo=timezone.utc)
    assert obs.sender == f"Adolph Smith <Patient/{PATIENT}>" and obs.source_kind == "health"
    assert obs.attrs["patient_name"] == "Adolph Smith"
    assert obs.conversation_id == f"Patient/{PATIENT}/Encounter/cfee1b87-9202-49ab-93dc-b4db9723e46f"
    assert obs.attrs["patient_id"] == PATIENT and obs.attrs["status"] == "final"


@needs_fhir
def test_patient_condition_medication_and_report_read_as_sentences(bundle_events):
    patient = bundle_events[f"Patient/{PATIENT}"]
    assert patient.attrs["patient_name"] == "Adolph Smith" and patient.text.startswith("Patient: Adolph Smith, male, born")
    condition = bundle_events["Condition/3b657511-a09f-4c6f-a24c-de523927b8f8"]
    assert condition.text == "Condition: Appendicitis (SNOMED 74400008), active, onset 1953-11-29T01:23:28+00:00"
    assert condition.attrs["onset"] == "1953-11-29T01:23:28+00:00" and "abatement" not in condition.attrs
    med = bundle_events["MedicationRequest/6ca8c6db-fbb6-49c8-b619-8464b9d4c523"]
    assert med.text == "MedicationRequest: Naproxen sodium 220 MG Oral Tablet (RxNorm 849574), stopped"
    assert med.attrs["codes"][0]["system"] == "http://www.nlm.nih.gov/research/umls/rxnorm"
    report = bundle_events["DiagnosticReport/9232c3b4-262b-447c-85a0-21a65f5a5dc3"]
    assert report.text.startswith("DiagnosticReport: Basic Metabolic Panel (LOINC 51990-0), final: Glucose, Urea Nitrogen")
    bp = next(e for e in bundle_events.values() if e.attrs.get("components"))
    assert "Systolic Blood Pressure" in bp.text and bp.attrs["components"][0]["unit"] == "mm[Hg]"


@needs_fhir
def test_every_bundle_lands_every_clinical_resource_type_and_skips_billing():
    records = list(read_source(f"fhir:{FHIR}", "t"))
    assert not [r for r in records if isinstance(r, DeadLetter)]
    kinds = Counter(r.attrs["resource_type"] for r in records)
    raw = Counter(e["resource"]["resourceType"] for f in sorted(FHIR.glob("*.json")) for e in json.loads(f.read_text())["entry"])
    for kind in ("Patient", "Encounter", "Observation", "Condition", "MedicationRequest", "Immunization", "Procedure",
                 "DiagnosticReport"):
        assert kinds[kind] == raw[kind]
    assert "Claim" not in kinds and "ExplanationOfBenefit" not in kinds
    assert len({r.sender for r in records}) == 8
    assert conform("raw_events", [r.to_row() for r in records[:200]]).num_rows == 200


def test_ndjson_observation_with_reference_range_and_interpretation(tmp_path):
    obs = {"resourceType": "Observation", "id": "k1", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3", "display": "Potassium"}]},
           "subject": {"reference": "Patient/p7"}, "encounter": {"reference": "Encounter/e3"},
           "effectiveDateTime": "2020-03-04T10:00:00-05:00", "valueQuantity": {"value": 5.9, "unit": "mmol/L"},
           "referenceRange": [{"low": {"value": 3.5, "unit": "mmol/L"}, "high": {"value": 5.1, "unit": "mmol/L"}}],
           "interpretation": [{"coding": [{"code": "H", "display": "High"}]}]}
    cond = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p7"},
            "code": {"text": "Hyperkalemia"}, "onsetDateTime": "2020-03", "abatementDateTime": "2020-04-01"}
    file = tmp_path / "export.ndjson"
    file.write_text(json.dumps(obs) + "\n\n" + json.dumps(cond) + "\n")
    potassium, condition = [r for r in read_source(f"fhir:{file}", "t")]
    assert potassium.text == "Observation: Potassium 5.9 mmol/L (LOINC 2823-3); reference range 3.5-5.1 mmol/L; High"
    assert potassium.attrs["reference_range"] == {"low": 3.5, "high": 5.1, "unit": "mmol/L"}
    assert potassium.attrs["interpretation"] == "High"
    assert potassium.event_time.utcoffset() == timedelta(hours=-5)
    assert potassium.conversation_id == "Patient/p7/Encounter/e3" and potassium.sender == "Patient/p7"
    assert condition.event_time == datetime(2020, 3, 1, tzinfo=timezone.utc)
    assert condition.attrs["abatement"] == "2020-04-01" and condition.source_id == "Condition/c1"


def test_labs_csv_maps_synthea_and_lis_style_columns(tmp_path):
    synthea = tmp_path / "observations.csv"
    synthea.write_text("DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,VALUE,UNITS,TYPE\n"
                       "2011-11-30T01:23:28Z,p1,e1,8302-2,Body Height,178.8,cm,numeric\n")
    (height,) = read_source(f"labs-csv:{synthea}", "t")
    assert height.text == "Observation: Body Height 178.8 cm (LOINC 8302-2)"
    assert height.conversation_id == "Patient/p1/Encounter/e1" and height.attrs["value"] == 178.8
    lis = tmp_path / "lis.csv"
    lis.write_text("Collected At;Patient;Analyte;Result;Units;Ref Low;Ref High;Flag\n"
                   "03/04/2020 10:00;P9;Potassium;5.9;mmol/L;3.5;5.1;H\n")
    (potassium,) = read_source(f"labs-csv:{lis}?delimiter=;&time=Collected At&tz=America/New_York", "t")
    assert potassium.text == "Observation: Potassium 5.9 mmol/L; reference range 3.5-5.1 mmol/L; H"
    assert potassium.event_time.isoformat() == "2020-03-04T10:00:00-05:00"
    assert potassium.attrs["reference_range"] == {"low": 3.5, "high": 5.1, "unit": "mmol/L"}
    assert potassium.attrs["interpretation"] == "H" and potassium.sender == "Patient/P9"
