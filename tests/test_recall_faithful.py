"""What an application receives from recall: verbatim text, the person asked about, no padding, time-aware answers.

Two patients' FHIR bundles go through the real backfill (connector, dedupe,
segmentation, triples, compression, MiniLM) into a real Lance store; the
assertions read the items and the context recall returns.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from memtape.connectors.lance_store import Store, column_is
from memtape.errors import UserError
from memtape.forgetting import OFF
from memtape.recall import recall

A1C = {"system": "http://loinc.org", "code": "4548-4", "display": "Hemoglobin A1c/Hemoglobin.total in Blood"}
BP = {"system": "http://loinc.org", "code": "8480-6", "display": "Systolic Blood Pressure"}
PATIENTS = {
    "pa": ("Ana", "Diaz", [("2019-03-01", 5.9), ("2021-06-12", 6.2), ("2023-09-30", 6.4)], "Metformin 500 MG Oral Tablet", "Prediabetes"),
    "pb": ("Ben", "Okafor", [("2018-01-15", 7.1), ("2020-11-02", 7.4), ("2022-05-20", 7.0)], "Lisinopril 10 MG Oral Tablet", "Hypertension"),
}


def _bundle(pid: str) -> dict:
    given, family, readings, med, condition = PATIENTS[pid]
    entries = [{"resourceType": "Patient", "id": pid, "name": [{"given": [given], "family": family}], "gender": "female",
                "birthDate": "1970-01-01"}]
    for i, (day, value) in enumerate(readings):
        enc = f"{pid}-enc{i}"
        entries.append({"resourceType": "Encounter", "id": enc, "status": "finished", "subject": {"reference": f"Patient/{pid}"},
                        "type": [{"text": "General examination"}], "period": {"start": f"{day}T09:00:00Z"}})
        entries.append({"resourceType": "Observation", "id": f"{pid}-a1c{i}", "status": "final", "code": {"coding": [A1C]},
                        "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{enc}"},
                        "effectiveDateTime": f"{day}T09:30:00Z", "valueQuantity": {"value": value, "unit": "%"}})
        entries.append({"resourceType": "Observation", "id": f"{pid}-bp{i}", "status": "final", "code": {"coding": [BP]},
                        "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{enc}"},
                        "effectiveDateTime": f"{day}T09:31:00Z", "valueQuantity": {"value": 120 + 3 * i, "unit": "mm[Hg]"}})
    entries.append({"resourceType": "MedicationRequest", "id": f"{pid}-med", "status": "active", "authoredOn": readings[1][0],
                    "medicationCodeableConcept": {"text": med}, "subject": {"reference": f"Patient/{pid}"},
                    "encounter": {"reference": f"Encounter/{pid}-enc1"}})
    entries.append({"resourceType": "Condition", "id": f"{pid}-cond", "code": {"text": condition}, "onsetDateTime": readings[0][0],
                    "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{pid}-enc0"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": r} for r in entries]}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    from memtape.pipelines.backfill import run_backfill

    folder = tmp_path_factory.mktemp("bundles")
    for pid in PATIENTS:
        (folder / f"{pid}.json").write_text(json.dumps(_bundle(pid)), encoding="utf-8")
    store = Store(str(tmp_path_factory.mktemp("recall-faithful") / "store"))
    run_backfill([f"fhir:{folder}"], "clinic", store, close_open=True)
    return store


def _raw_text(store: Store, event_id: str) -> str:
    return store.read("raw_events", where=column_is("event_id", event_id), columns=["text"]).column("text")[0].as_py()


def _plain(text: str) -> str:
    return " ".join(text.split()).casefold()


@pytest.mark.slow
def test_latest_reading_question_answers_about_the_named_patient_with_value_and_unit(store: Store) -> None:
    result = recall("What was Ana Diaz's most recent Hemoglobin A1c/Hemoglobin.total in Blood?", "clinic", 1000, store=store, forgetting=OFF)
    assert result.items, result.reason
    assert result.subjects == ["Ana Diaz <Patient/pa>"]
    assert all(s.split("/")[1].startswith("pa") for i in result.items for s in i.source_ids)
    top = result.items[0]
    assert top.source_ids == ["Observation/pa-a1c2"]
    assert "6.4 %" in top.text and "(LOINC 4548-4)" in top.text
    assert "Ana Diaz <Patient/pa>" in top.subjects


def test_latest_reading_question_stops_at_its_series_with_a_short_history(store: Store) -> None:
    result = recall("What was Ana Diaz's most recent Hemoglobin A1c/Hemoglobin.total in Blood?", "clinic", 1000, store=store, forgetting=OFF)
    assert result.items[0].source_ids == ["Observation/pa-a1c2"]
    assert {s for i in result.items for s in i.source_ids} == {"Observation/pa-a1c0", "Observation/pa-a1c1", "Observation/pa-a1c2"}
    assert "Systolic" not in result.context  # the same visits' other indicator is not what was asked


def test_every_item_is_a_verbatim_span_of_the_raw_event_it_cites_with_units_and_brackets(store: Store) -> None:
    result = recall("What was Ana Diaz's systolic blood pressure over time?", "clinic", 1000, store=store, forgetting=OFF)
    assert result.order == "time" and result.items
    for item in result.items:
        assert len(item.raw_event_ids) == 1
        assert _plain(item.text) in _plain(_raw_text(store, item.raw_event_ids[0]))
    assert [i.source_ids[0] for i in result.items] == ["Observation/pa-bp0", "Observation/pa-bp1", "Observation/pa-bp2"]
    assert all("Systolic Blood Pressure" in i.text and "mm[Hg]" in i.text for i in result.items)
    times = [i.event_time for i in result.items]
    assert times == sorted(times)


def test_subject_option_restricts_recall_to_that_person_by_id(store: Store) -> None:
    result = recall("What medications were prescribed?", "clinic", 1000, store=store, forgetting=OFF, subject="Patient/pb")
    assert result.items and all(s.split("/")[1].startswith("pb") for i in result.items for s in i.source_ids)
    assert "Lisinopril 10 MG Oral Tablet" in result.context and "Metformin" not in result.context
    with pytest.raises(UserError, match="no memories about"):
        recall("What medications were prescribed?", "clinic", 1000, store=store, forgetting=OFF, subject="Carla Nobody")


def test_budget_is_a_ceiling_a_narrow_question_gets_a_short_context(store: Store) -> None:
    result = recall("What conditions has Ben Okafor been diagnosed with?", "clinic", 1000, store=store, forgetting=OFF)
    assert "Hypertension" in result.context and "Prediabetes" not in result.context
    assert result.tokens < 300
    capped = recall("What conditions has Ben Okafor been diagnosed with?", "clinic", 1000, store=store, forgetting=OFF, max_items=1)
    assert len(capped.items) == 1
    strict = recall("What conditions has Ben Okafor been diagnosed with?", "clinic", 1000, store=store, forgetting=OFF,
                    min_score=10 * max(i.score for i in result.items))
    loose = recall("What conditions has Ben Okafor been diagnosed with?", "clinic", 1000, store=store, forgetting=OFF, min_score=0.0)
    assert len(loose.items) > len(result.items)
    assert not strict.items and strict.reason


def test_relevance_order_puts_the_best_item_first_and_time_order_is_chronological(store: Store) -> None:
    question = "Ben Okafor Hemoglobin A1c"
    by_relevance = recall(question, "clinic", 1000, store=store, forgetting=OFF)
    assert by_relevance.items[0].score == max(i.score for i in by_relevance.items)
    by_time = recall(question, "clinic", 1000, store=store, forgetting=OFF, order="time")
    times = [i.event_time for i in by_time.items]
    assert times == sorted(times)


def test_empty_query_is_a_clear_error(store: Store) -> None:
    for query in ("", "   "):
        with pytest.raises(UserError, match="needs a query"):
            recall(query, "clinic", 100, store=store, forgetting=OFF)


def test_health_memory_names_its_patient_in_header_and_subjects_and_keeps_text_as_written(store: Store) -> None:
    rows = store.read("memories", where=column_is("tenant", "clinic"), columns=["header", "text", "subjects"]).to_pylist()
    ana = [r for r in rows if "Ana Diaz <Patient/pa>" in (r["subjects"] or [])]
    assert ana and all(r["subjects"] == ["Ana Diaz <Patient/pa>"] for r in ana)
    assert all("about: Ana Diaz <Patient/pa>" in r["header"] for r in ana)
    assert any("Systolic Blood Pressure 126 mm[Hg] (LOINC 8480-6)" in r["text"] for r in ana)


@pytest.mark.slow
def test_fhir_recall_eval_cli_reports_the_contract_fields(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from memtape.evals.recall import command

    folder = tmp_path / "bundles"
    folder.mkdir()
    for pid in PATIENTS:
        (folder / f"{pid}.json").write_text(json.dumps(_bundle(pid)), encoding="utf-8")
    out = CliRunner().invoke(command, ["--fhir", str(folder), "--format", "json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output[out.output.index("{"):])
    assert {"latest", "meds", "conds", "subject_precision", "wrong_patient_items", "verbatim_share", "mean_tokens"} <= report.keys()
    assert {"hit", "value_shown", "asked_code_token_share"} <= report["latest"].keys()
    assert {"coverage", "on_topic_token_share"} <= report["meds"].keys() and {"coverage", "on_topic_token_share"} <= report["conds"].keys()
    assert 0.5 < report["latest"]["asked_code_token_share"] <= 1.0  # the asked series, not the visit's other readings
    assert report["subject_precision"] == 1.0 and report["wrong_patient_items"] == 0
    assert report["latest"]["hit"] == 1.0 and report["latest"]["value_shown"] == 1.0 and report["verbatim_share"] == 1.0
