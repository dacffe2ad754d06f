"""Adverse events coded by the CTCAE v5.0 dictionary, and the import of the NCI's term spreadsheet (DOMAIN §3).

A coded event's grade must be one its term defines (grade 0 is never an adverse event; laboratory terms
stop at 4). An "Other, specify" term takes the reported (verbatim) term and a system organ class. Events
entered before the dictionary keep their free-text term and are coded later (a data query asks for it).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import transaction

from config.errors import RuleViolation
from patients.models import CtcaeTerm

# The NCI's CTCAE v5.0 spreadsheet: one row per term, a "-" in a grade column where the grade is not defined.
COLUMNS = {"meddra": "MedDRA Code", "soc": "MedDRA SOC", "term": "CTCAE Term", "definition": "Definition"}
GRADE_COLUMNS = tuple(f"Grade {grade}" for grade in range(1, 6))
NOT_DEFINED = {"", "-", "–", "—"}


def check_ctcae_grade(*, term: CtcaeTerm | None, grade: int | None) -> None:
    """CTCAE v5.0: grade 0 is never an adverse event; a coded event's grade is one its term defines."""
    if grade == 0:
        raise RuleViolation("grade_not_allowed", "Grade 0 is not an adverse event (CTCAE grades run 1 to 5).",
                            field="grade")
    if term is not None and grade is not None and grade not in term.allowed_grades:
        raise RuleViolation("grade_not_allowed", f"{term.term} allows grade {term.grades_label()} only.",
                            field="grade")


def check_event_coding(*, term: CtcaeTerm | None, reported_term: str, system_organ_class: str) -> None:
    """A coded event names its term; "Other, specify" also needs the verbatim term and a system organ class."""
    if term is None:
        if not reported_term.strip():
            raise RuleViolation("term_required", "Choose the CTCAE term (or give the reported term).",
                                field="ctcae_term")
        return
    if not term.is_other:
        return
    if not reported_term.strip() or reported_term.strip().lower() == term.term.lower():
        raise RuleViolation("verbatim_term_required", f"{term.term}: give the reported (verbatim) term.",
                            field="term")
    if not (system_organ_class.strip() or term.system_organ_class):
        raise RuleViolation("system_organ_class_required", f"{term.term}: give the system organ class.",
                            field="system_organ_class")


def coded_values(*, term: CtcaeTerm | None, reported_term: str, system_organ_class: str,
                 meddra_code: str) -> dict[str, str]:
    """What a coded event stores from its dictionary term: reported term, MedDRA code and system organ class."""
    if term is None:
        return {"term": reported_term, "system_organ_class": system_organ_class, "meddra_code": meddra_code}
    return {"term": reported_term.strip() or term.term,
            "system_organ_class": term.system_organ_class or system_organ_class.strip(),
            "meddra_code": term.meddra_code}


def find_term(value: str) -> CtcaeTerm | None:
    """A dictionary term by its MedDRA code (digits) or its name (any case)."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return CtcaeTerm.objects.filter(meddra_code=value).first()
    return CtcaeTerm.objects.filter(term__iexact=value).first()


# --- import of the NCI spreadsheet ---------------------------------------------------------------


@dataclass(frozen=True)
class TermRow:
    term: str
    meddra_code: str
    system_organ_class: str
    allowed_grades: tuple[int, ...]
    definition: str


@dataclass
class ImportSummary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def __str__(self) -> str:
        return f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a MedDRA code read from a numeric spreadsheet cell
    return " ".join(str(value).split())


def parse_rows(records: Iterable[dict[str, Any]]) -> Iterator[TermRow]:
    """Rows in the NCI layout (MedDRA Code, MedDRA SOC, CTCAE Term, Grade 1..5, Definition)."""
    for number, record in enumerate(records, start=2):  # row 1 is the header
        values = {key: _text(record.get(column)) for key, column in COLUMNS.items()}
        if not values["term"]:
            continue
        if values["meddra"] and not values["meddra"].isdigit():
            raise RuleViolation("invalid_ctcae_file", f"Row {number}: MedDRA code {values['meddra']!r} is not a "
                                "number.", field="file")
        grades = tuple(g for g, column in enumerate(GRADE_COLUMNS, start=1)
                       if _text(record.get(column)) not in NOT_DEFINED)
        if not grades:
            raise RuleViolation("invalid_ctcae_file", f"Row {number}: {values['term']} defines no grade.",
                                field="file")
        yield TermRow(term=values["term"], meddra_code=values["meddra"], system_organ_class=values["soc"],
                      allowed_grades=grades, definition=values["definition"])


def read_ctcae_file(path: Path) -> list[TermRow]:
    """The rows of the NCI's CTCAE v5.0 spreadsheet (.xlsx, its first sheet) or a CSV export of it."""
    if path.suffix.lower() == ".xlsx":
        return list(parse_rows(_xlsx_records(path)))
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            _check_header(list(reader.fieldnames or []))
            return list(parse_rows(reader))
    raise RuleViolation("invalid_ctcae_file", "Give the NCI CTCAE v5.0 spreadsheet as .xlsx or .csv.", field="file")


def _check_header(header: list[str]) -> None:
    missing = [column for column in (*COLUMNS.values(), *GRADE_COLUMNS) if column not in header]
    if missing:
        raise RuleViolation("invalid_ctcae_file", f"Missing columns: {', '.join(missing)}.", field="file")


def _xlsx_records(path: Path) -> Iterator[dict[str, Any]]:
    from openpyxl import load_workbook  # only the import command reads spreadsheets

    sheet = load_workbook(path, read_only=True, data_only=True).worksheets[0]
    rows = sheet.iter_rows(values_only=True)
    header = [_text(cell) for cell in next(rows, ())]
    _check_header(header)
    for row in rows:
        yield dict(zip(header, row, strict=False))


@transaction.atomic
def import_ctcae_terms(rows: Iterable[TermRow]) -> ImportSummary:
    """Create or update terms (matched by MedDRA code, else by term); all or nothing; audited."""
    summary = ImportSummary()
    for row in rows:
        existing = (CtcaeTerm.objects.select_for_update().filter(meddra_code=row.meddra_code).first()
                    if row.meddra_code else None) or CtcaeTerm.objects.select_for_update().filter(
                        term__iexact=row.term).first()
        values = {"term": row.term, "meddra_code": row.meddra_code, "system_organ_class": row.system_organ_class,
                  "allowed_grades": list(row.allowed_grades), "definition": row.definition}
        if existing is None:
            term = CtcaeTerm(**values)
            summary.created += 1
        elif all(getattr(existing, name) == value for name, value in values.items()):
            summary.unchanged += 1
            continue
        else:
            term = existing
            for name, value in values.items():
                setattr(term, name, value)
            summary.updated += 1
        term.full_clean()
        term.save()
    return summary
