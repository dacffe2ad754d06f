"""Catalogue codes in SDTM form: test codes (8 characters), test names (40), units (CDISC, not UCUM),
specimens, and the analyte catalogue as one look-up per export."""

from __future__ import annotations

import re
from dataclasses import dataclass

from assays.lab_grading import LAB_GRADING_VERSION
from assays.models import Analyte, CtcaeLabTerm, ReferenceRange
from assays.ranges import RangeRow, pick_range

# Catalogue codes whose SDTM test code differs (CDISC LBTESTCD where one exists; otherwise a short form).
TESTCD = {
    "ANC": "NEUT", "PLT": "PLAT", "LYMPH": "LYM", "TBILI": "BILI", "FIBRINOGEN": "FIBRINO", "IFNG": "IFNG",
    "MARROW_BLASTS": "BLASTS", "CAR_FLOW_PCT": "CARTPCT", "CAR_FLOW_ABS": "CARTABS", "CD19_B": "CD19B",
    "CD19_B_ABS": "CD19BABS", "CD19_BLASTS": "CD19BLST", "CD22_BLASTS": "CD22BLST", "CD38_BLASTS": "CD38BLST",
    "CHIMERISM": "CHIMERSM", "BCR_ABL1_IS": "BCRABL1", "ANTI_CAR_AB": "ANTICAR", "CAR_QPCR": "CARTGENE",
}
TESTCD_PATTERN = re.compile(r"^[A-Z_][A-Z0-9_]{0,7}$")
SPECIMEN = {"pb": "BLOOD", "bm": "BONE MARROW", "csf": "CEREBROSPINAL FLUID", "serum": "SERUM", "plasma": "PLASMA"}
UCUM_POWER = re.compile(r"10\*(-?\d+)")
ANNOTATION = re.compile(r"\{([^}]*)\}")


def testcd_of(code: str) -> str:
    """The SDTM --TESTCD of a catalogue code: the table above, else the code made a valid 8-character name."""
    if code in TESTCD:
        return TESTCD[code]
    cleaned = re.sub(r"[^A-Z0-9_]", "", code.upper())
    if not cleaned or cleaned[0].isdigit():
        cleaned = f"X{cleaned}"
    return cleaned[:8]


def testname_of(name: str) -> str:
    """--TEST holds 40 characters: drop a trailing parenthesis that does not fit, then cut."""
    if len(name) > 40 and "(" in name:
        name = name[: name.index("(")].rstrip(" ,")
    return name[:40]


def cdisc_unit(ucum: str) -> str:
    """A UCUM unit as CDISC writes it: 10*9/L -> 10^9/L, {copies}/ug -> copies/ug, mg/L{FEU} -> mg/L FEU."""
    unit = UCUM_POWER.sub(r"10^\1", ucum)
    unit = ANNOTATION.sub(lambda m: m.group(1) if m.start() == 0 else f" {m.group(1)}", unit)
    return unit.strip()


def number_text(value: float) -> str:
    """A number as results print it: no trailing .0 for whole numbers, else the shortest exact form."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


@dataclass(frozen=True, slots=True)
class Test:
    code: str
    testcd: str
    name: str
    loinc: str
    unit: str  # CDISC form of the canonical unit
    lloq: float | None
    toxicity: str  # CTCAE term name, "" if not graded
    ranges: tuple[RangeRow, ...]

    def range_for(self, sex: str, age: int | None) -> tuple[float | None, float | None]:
        return pick_range(self.ranges, sex, age)


def catalogue() -> dict[int, Test]:
    """Every analyte as an SDTM test, with its reference ranges (two queries)."""
    ranges: dict[int, list[RangeRow]] = {}
    for analyte_id, *rest in ReferenceRange.objects.order_by("analyte", "sex", "age_min_years", "pk").values_list(
            "analyte_id", "sex", "age_min_years", "age_max_years", "low", "high"):
        ranges.setdefault(analyte_id, []).append(tuple(rest))  # type: ignore[arg-type]
    terms = dict(CtcaeLabTerm.choices)
    return {pk: Test(code, testcd_of(code), testname_of(name), loinc, cdisc_unit(unit), lloq, terms.get(term, ""),
                     tuple(ranges.get(pk, ())))
            for pk, code, name, loinc, unit, lloq, term in Analyte.objects.order_by("pk").values_list(
                "pk", "code", "name", "loinc", "canonical_unit", "lloq", "ctcae_term")}


__all__ = ["LAB_GRADING_VERSION", "SPECIMEN", "Test", "catalogue", "cdisc_unit", "number_text", "testcd_of",
           "testname_of"]
