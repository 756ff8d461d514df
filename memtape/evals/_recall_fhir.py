"""``memtape eval recall --fhir DIR``: does recall answer about the right patient, with the value asked for?

Every bundle in DIR (one patient each) is backfilled into one tenant through
the real pipeline. Per patient, plain questions name them by given and family
name: "What was NAME's most recent DISPLAY?" for up to three observation codes
they have at least twice (the codes with the most readings; gold: their latest
Observation of that code), "What medications has NAME been prescribed?" and
"What conditions has NAME been diagnosed with?" (gold: their distinct
medication and condition names). The score reads what the user receives: the
cited resources and the context text. Padding is measured as the share of the
context's tokens (day lines included) spent on lines of what was asked: readings
of the asked code, MedicationRequest or Condition lines. This module only evaluates.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
from pathlib import Path
from typing import Any, Callable

TENANT = "fhir-eval"
LATEST_CODES = 3


@dataclasses.dataclass
class Reading:
    resource: str  # Observation/id
    when: str
    value: str  # as the connector renders it: "6.11 %"


@dataclasses.dataclass
class Patient:
    patient_id: str
    name: str
    resources: set[str]  # Type/id of every resource of theirs
    series: dict[str, tuple[str, list[Reading]]]  # observation code -> (display, readings)
    medications: set[str]
    conditions: set[str]

    def latest_questions(self) -> list[tuple[str, list[Reading], set[str]]]:
        """(question, gold readings at the latest time, every reading's resource) for the codes with the most readings, at least two."""
        codes = sorted((c for c, (_, r) in self.series.items() if len(r) >= 2), key=lambda c: (-len(self.series[c][1]), c))
        out = []
        for code in codes[:LATEST_CODES]:
            display, readings = self.series[code]
            newest = max(r.when for r in readings)
            out.append((f"What was {self.name}'s most recent {display}?", [r for r in readings if r.when == newest],
                        {r.resource for r in readings}))
        return out


def load_patients(folder: Path) -> list[Patient]:
    """One ``Patient`` per bundle file, read with the connector's own renderings of names and values."""
    from memtape.connectors.sources.fhir import _name, _value, concept_name, reference_id

    patients = []
    for file in sorted(folder.glob("*.json")):
        entries = [e.get("resource") or {} for e in json.loads(file.read_text(encoding="utf-8")).get("entry") or []]
        person = next((r for r in entries if r.get("resourceType") == "Patient"), None)
        if person is None:
            continue
        given = " ".join(str(g) for g in (person.get("name") or [{}])[0].get("given") or [])
        family = str((person.get("name") or [{}])[0].get("family") or "")
        patient = Patient(person["id"], f"{given} {family}".strip() or _name(person), set(), {}, set(), set())
        for r in entries:
            kind, rid = r.get("resourceType"), r.get("id")
            owner = rid if kind == "Patient" else reference_id(r.get("subject") or r.get("patient"))
            if owner != patient.patient_id:
                continue
            patient.resources.add(f"{kind}/{rid}")
            if kind == "Observation" and r.get("effectiveDateTime"):
                coding = ((r.get("code") or {}).get("coding") or [{}])[0]
                _, _, shown = _value(r)
                if coding.get("code") and shown:
                    display, readings = patient.series.setdefault(coding["code"], (concept_name(r.get("code")), []))
                    readings.append(Reading(f"Observation/{rid}", r["effectiveDateTime"], shown))
            elif kind == "MedicationRequest":
                name = concept_name(r.get("medicationCodeableConcept"))
                if name:
                    patient.medications.add(name)
            elif kind == "Condition":
                name = concept_name(r.get("code"))
                if name:
                    patient.conditions.add(name)
        patients.append(patient)
    return patients


def _score_coverage(scores: list[float], shares: list[float], names: set[str], kind: str, result: Any) -> None:
    scores.append(_coverage(names, result.context))
    shares.append(_token_share(result, lambda source_id: source_id.startswith(f"{kind}/")))


def _token_share(result: Any, asked: Callable[[str], bool]) -> float:
    """Share of the context's tokens on lines citing what was asked (0 for an empty context)."""
    from memtape.recall.pack import count_tokens

    on_topic = sum(count_tokens(f"{item.who}: {item.text}" if item.who else item.text)
                   for item in result.items if any(asked(s) for s in item.source_ids))
    return on_topic / result.tokens if result.tokens else 0.0


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _coverage(names: set[str], context: str) -> float:
    text = context.casefold()
    return sum(n.casefold() in text for n in names) / len(names)


def evaluate(folder: Path, budget: int, home: str | None = None,
             progress: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """Backfill the bundles, ask every patient's questions, and score what recall returned."""
    from memtape.connectors.lance_store import Store
    from memtape.evals.recall import raw_texts, verbatim
    from memtape.forgetting import OFF
    from memtape.pipelines.backfill import run_backfill
    from memtape.recall import recall

    patients = load_patients(folder)
    owner = {res: p.patient_id for p in patients for res in p.resources}
    with tempfile.TemporaryDirectory(prefix="memtape-eval-fhir-") as tmp:
        store = Store(home or str(Path(tmp) / "store"))
        progress(f"backfill {len(patients)} patients")
        run_backfill([f"fhir:{folder}"], TENANT, store, close_open=True)
        hits, shown, latest_n = 0, 0, 0
        meds: list[float] = []
        conds: list[float] = []
        latest_share: list[float] = []
        meds_share: list[float] = []
        conds_share: list[float] = []
        cited_own, cited_other, wrong_items, items_total, items_verbatim = 0, 0, 0, 0, 0
        tokens: list[float] = []
        for patient in patients:
            progress(f"{patient.name}: questions")
            asked: list[tuple[str, Callable[[Any], None]]] = []
            for question, gold, series in patient.latest_questions():
                def score_latest(result: Any, gold: list[Reading] = gold, series: set[str] = series) -> None:
                    nonlocal hits, shown, latest_n
                    cited = {s for item in result.items for s in item.source_ids}
                    latest_n += 1
                    hits += any(r.resource in cited for r in gold)
                    shown += any(r.value in result.context for r in gold)
                    latest_share.append(_token_share(result, series.__contains__))
                asked.append((question, score_latest))
            if patient.medications:
                asked.append((f"What medications has {patient.name} been prescribed?",
                               functools.partial(_score_coverage, meds, meds_share, patient.medications, "MedicationRequest")))
            if patient.conditions:
                asked.append((f"What conditions has {patient.name} been diagnosed with?",
                               functools.partial(_score_coverage, conds, conds_share, patient.conditions, "Condition")))
            for question, score in asked:
                result = recall(question, TENANT, budget, store=store, forgetting=OFF, reinforce_recalled=False)
                score(result)
                tokens.append(result.tokens)
                texts = raw_texts(store, TENANT, result.items)
                for item in result.items:
                    items_total += 1
                    items_verbatim += verbatim(item, texts)
                    mine = [owner.get(s) == patient.patient_id for s in item.source_ids]
                    cited_own += sum(mine)
                    cited_other += len(mine) - sum(mine)
                    wrong_items += not all(mine)
    cited = cited_own + cited_other
    return {
        "budget": budget,
        "patients": len(patients),
        "latest": {"questions": latest_n, "hit": round(hits / latest_n, 4) if latest_n else None,
                   "value_shown": round(shown / latest_n, 4) if latest_n else None,
                   "asked_code_token_share": _mean(latest_share)},
        "meds": {"questions": len(meds), "coverage": _mean(meds), "on_topic_token_share": _mean(meds_share)},
        "conds": {"questions": len(conds), "coverage": _mean(conds), "on_topic_token_share": _mean(conds_share)},
        "subject_precision": round(cited_own / cited, 4) if cited else None,
        "wrong_patient_items": wrong_items,
        "verbatim_share": round(items_verbatim / items_total, 4) if items_total else None,
        "mean_tokens": round(sum(tokens) / len(tokens), 1) if tokens else 0.0,
        "items": items_total,
        "token_count": "words x 1.3",
    }
