"""Lab results CSV connector (``labs-csv:PATH``): one result per row, columns found by name.

Columns are matched case- and punctuation-insensitively against common names
(Synthea's ``DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,VALUE,UNITS``, LIS
exports' ``collected, test, result, ref_low, ref_high, flag`` ...); any field
can be named explicitly, e.g. ``labs-csv:results.csv?time=Collected%20At&value=Result``.
Each row becomes an Observation-like event whose attrs match the FHIR
connector's (codes, value, unit, reference range, interpretation). Times
without a zone take ``?tz=`` (UTC otherwise). Rows stream; reads only.
"""
from __future__ import annotations

import csv
import re
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Iterator

from memtape.connectors.base import Record, register
from memtape.connectors.sources._common import (
    LimitError,
    RecordError,
    TimeError,
    check_text,
    checked_time,
    dead_letter,
    each_file,
    limits,
    open_binary,
    split_options,
    text_lines,
    undecodable,
    zone,
)
from memtape.connectors.sources.fhir import SYSTEM_LABELS, number
from memtape.schemas.records import RawEvent

_SCHEME = "labs-csv"
DEFAULT_CODE_SYSTEM = "http://loinc.org"
COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "time": ("date", "time", "datetime", "effective", "effectivedate", "effectivedatetime", "collected",
             "collectiondate", "collectedat", "resultdate", "timestamp", "observationdate", "specimencollected"),
    "patient": ("patient", "patientid", "subject", "subjectid", "mrn", "personid"),
    "encounter": ("encounter", "encounterid", "visit", "visitid"),
    "test": ("test", "testname", "description", "name", "analyte", "observation", "labtest", "component", "display"),
    "code": ("code", "loinc", "loinccode", "testcode"),
    "value": ("value", "result", "resultvalue", "numericvalue"),
    "unit": ("unit", "units", "uom"),
    "low": ("low", "reflow", "referencelow", "rangelow", "normallow"),
    "high": ("high", "refhigh", "referencehigh", "rangehigh", "normalhigh"),
    "range": ("referencerange", "refrange", "range", "normalrange"),
    "flag": ("flag", "abnormalflag", "interpretation", "abnormal"),
}
REQUIRED = ("time", "value")
_DATE_FORMATS = ("%m/%d/%Y %H:%M", "%m/%d/%Y", "%d.%m.%Y %H:%M", "%d.%m.%Y", "%Y%m%d%H%M%S", "%Y%m%d")
_NOT_ALNUM = re.compile(r"[^a-z0-9]")


def _norm(name: str) -> str:
    return _NOT_ALNUM.sub("", name.lower())


def column_map(header: list[str], options: dict[str, str]) -> dict[str, int]:
    """Field -> column index, from ``?field=Column`` options first, then the default names."""
    index = {_norm(h): i for i, h in enumerate(header)}
    found: dict[str, int] = {}
    for field, names in COLUMN_NAMES.items():
        if field in options:
            if _norm(options[field]) not in index:
                raise RecordError(f"column {options[field]!r} (for {field}) is not in the header")
            found[field] = index[_norm(options[field])]
            continue
        for name in names:
            if name in index:
                found[field] = index[name]
                break
    missing = [f for f in REQUIRED if f not in found] + ([] if {"test", "code"} & set(found) else ["test or code"])
    if missing:
        raise RecordError(f"no column for {', '.join(missing)} in header {header[:12]}")
    return found


def _time(text: str, tz: tzinfo) -> datetime:
    text = text.strip()
    try:
        return checked_time(datetime.fromisoformat(text.replace("Z", "+00:00")), tz)
    except ValueError as exc:
        if isinstance(exc, TimeError):
            raise
    for fmt in _DATE_FORMATS:
        try:
            return checked_time(datetime.strptime(text, fmt), tz)
        except ValueError as exc:
            if isinstance(exc, TimeError):
                raise
    raise TimeError(f"unparseable date {text[:40]!r}")


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _row_event(row: list[str], cols: dict[str, int], file: Path, lineno: int, tenant: str, tz: tzinfo,
               options: dict[str, str], max_bytes: int) -> RawEvent:
    if any(i >= len(row) for i in cols.values()):
        raise RecordError(f"row has {len(row)} fields, fewer than the header maps")
    get = {field: row[i].strip() for field, i in cols.items()}
    if any(undecodable(v) for v in get.values()):
        raise UnicodeError("row is not valid UTF-8")
    if any("\x00" in v for v in get.values()):
        raise RecordError("NUL byte in row: binary data in a text file")
    if not get["value"]:
        raise RecordError("empty result value")
    value, unit, test, code = _number(get["value"]), get.get("unit") or None, get.get("test") or "", get.get("code")
    system = options.get("code_system", DEFAULT_CODE_SYSTEM)
    rng = {k: _number(get[k]) for k in ("low", "high") if get.get(k)}
    range_text = get.get("range") or (f"{get.get('low', '')}-{get.get('high', '')}" if rng else "")
    if range_text:
        rng = {**rng, **({"text": get["range"]} if get.get("range") else {}), **({"unit": unit} if unit else {})}
    patient, encounter = get.get("patient") or None, get.get("encounter") or None
    text = f"Observation: {test or code} {number(value)} {unit or ''}".rstrip()
    text += f" ({SYSTEM_LABELS.get(system, system)} {code})" if code else ""
    text += f"; reference range {range_text} {unit or ''}".rstrip() if range_text else ""
    text += f"; {get['flag']}" if get.get("flag") else ""
    attrs = {
        "resource_type": "Observation",
        "patient_id": patient,
        "encounter_id": encounter,
        "codes": [{k: v for k, v in (("system", system), ("code", code), ("display", test or None)) if v}] if code else None,
        "value": value,
        "unit": unit,
        "reference_range": rng or None,
        "interpretation": get.get("flag") or None,
    }
    return RawEvent(
        tenant=tenant,
        source_kind="health",
        source=_SCHEME,
        source_id=f"{file.name}:{lineno}",
        text=check_text(text, max_bytes),
        event_time=_time(get["time"], tz),
        conversation_id=(f"Patient/{patient}" + (f"/Encounter/{encounter}" if encounter else "")) if patient else None,
        sender=f"Patient/{patient}" if patient else None,
        payload=",".join(row),
        attrs={k: v for k, v in attrs.items() if v not in (None, [], "")},
    )


def _split_row(line: str, delimiter: str) -> list[str]:
    """The cells of one physical line; a quote left open at its end is an error for this row alone.

    Rows are parsed one line at a time, so a broken quote cannot swallow the
    rows after it (a cell cannot span lines, which lab exports never need).
    """
    row = next(csv.reader([line + "\n"], delimiter=delimiter), [])
    if row and row[-1].endswith("\n"):
        raise RecordError("unterminated quote in this row")
    return row


def _read_file(file: Path, tenant: str, options: dict[str, str], max_bytes: int) -> Iterator[Record]:
    tz = zone(options.get("tz"))
    delimiter = options.get("delimiter", ",")
    cols: dict[str, int] | None = None
    with open_binary(file) as handle:
        for lineno, line, oversize in text_lines(handle, max_bytes):
            position = f"{file}:{lineno}"
            if oversize:
                yield dead_letter(tenant, _SCHEME, position, LimitError(f"line exceeds max_message_bytes ({max_bytes})"),
                                  line[:1024])
                continue
            try:
                row = _split_row(line, delimiter)
                if not any(cell.strip() for cell in row):
                    continue
                if cols is None:
                    cols = column_map(row, options)
                    continue
                yield _row_event(row, cols, file, lineno, tenant, tz, options, max_bytes)
            except RecordError as exc:
                yield dead_letter(tenant, _SCHEME, position, exc, line[:1024])
                if cols is None:
                    return
            except Exception as exc:  # one bad row must not stop the file
                yield dead_letter(tenant, _SCHEME, position, exc, line[:1024])


@register(_SCHEME, "health", "CSV of lab results, columns mapped by name or ?field=Column")
def read_labs_csv(path: str, tenant: str) -> Iterator[Record]:
    path, options = split_options(path)
    max_bytes = limits().max_message_bytes

    def read_file(file: Path) -> Iterator[Record]:
        file_options = {"delimiter": "\t", **options} if file.suffix.lower() == ".tsv" else options
        return _read_file(file, tenant, file_options, max_bytes)

    yield from each_file(path, tenant, _SCHEME, read_file, accept={".csv", ".tsv", ".txt"})
