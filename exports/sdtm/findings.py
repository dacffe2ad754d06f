"""Findings: LB (laboratory results), PC (CAR transgene by qPCR, DOMAIN 5.5) and RS (disease response,
including MRD).

LB and PC stream one current (not superseded) result per row from one server-side cursor, sorted by
subject, test and collection time, so a trial with a million results takes constant memory.

- LBORRES/LBORRESU are the value and unit as the laboratory sent them; LBSTRESN/LBSTRESU are the value
  in the analyte's canonical unit (written as CDISC writes it), LBSTNRLO/LBSTNRHI the subject's reference
  range in that unit (by sex and age at consent).
- A censored value ("<LLOQ", "<0.5", ">ULOQ") has LBSTRESC "<" or ">" and the bound in the canonical
  unit, and no LBSTRESN: it is not a measured number.
- LBNRIND and LBTOXGR are the reference-range flag and CTCAE v5.0 grade stored when the result was
  ingested (graded against the reference range, without baseline, assays.lab_grading).
- LBLOBXFL marks, per subject and test, the last result collected on or before the date of the first
  study treatment (RFXSTDTC: the first lymphodepletion dose, or the first infusion without one).
- A cancelled result is LBSTAT NOT DONE, without results.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from django.db.models import F, Q
from django.db.models.functions import Collate

from assays.models import Result
from exports.sdtm.codes import SPECIMEN, catalogue, number_text
from exports.sdtm.common import (
    CHUNK,
    STUDYID,
    USUBJID,
    VISIT,
    VISITNUM,
    Context,
    Dataset,
    Row,
    SubjectRef,
    char,
    domain_var,
    dtc,
    num,
    numbered,
    seq,
    subject_order,
)
from patients.models import ResponseAssessment
from patients.timeline import local_date

PC_ANALYTES = ("CAR_QPCR",)
NRIND = {"L": "LOW", "N": "NORMAL", "H": "HIGH"}
CANCELLED = Result.Status.CANCELLED

LB_VARIABLES = (
    STUDYID, domain_var("LB"), USUBJID, seq("LB"),
    char("LBREFID", "Specimen ID", 40, "The draw's accession number."),
    char("LBTESTCD", "Lab Test or Examination Short Name", 8, "CDISC test code where one exists, else derived from "
         "the catalogue code."),
    char("LBTEST", "Lab Test or Examination Name", 40),
    char("LBORRES", "Result or Finding in Original Units", 40, "As sent by the laboratory (e.g. 52000, <LLOQ)."),
    char("LBORRESU", "Original Units", 30, "As sent."),
    char("LBSTRESC", "Character Result/Finding in Std Format", 40,
         "The value in the canonical unit; censored values keep their sign (e.g. <0.3) and have no LBSTRESN."),
    num("LBSTRESN", "Numeric Result/Finding in Standard Units"),
    char("LBSTRESU", "Standard Units", 30, "The analyte's canonical unit in CDISC form (10^9/L, copies/ug)."),
    num("LBSTNRLO", "Normal Range Lower Limit-Std Units"),
    num("LBSTNRHI", "Normal Range Upper Limit-Std Units"),
    char("LBNRIND", "Reference Range Indicator", 6, "LOW, NORMAL or HIGH against LBSTNRLO/LBSTNRHI."),
    char("LBSTAT", "Completion Status", 8),
    char("LBREASND", "Reason Test Not Done", 40),
    char("LBLOINC", "LOINC Code", 10),
    char("LBSPEC", "Specimen Type", 20),
    char("LBLOBXFL", "Last Observation Before Exposure Flag", 1,
         "Y on the last result per test collected on or before the date of RFXSTDTC."),
    char("LBTOX", "Toxicity", 40, "CTCAE v5.0 term the result is graded against."),
    char("LBTOXGR", "Standard Toxicity Grade", 1, "CTCAE v5.0 grade derived at ingestion (no baseline)."),
    VISITNUM, VISIT,
    char("LBDTC", "Date/Time of Specimen Collection", 19),
    num("LBDY", "Study Day of Specimen Collection"),
)

PC_VARIABLES = (
    STUDYID, domain_var("PC"), USUBJID, seq("PC"),
    char("PCREFID", "Reference ID", 40, "The draw's accession number."),
    char("PCTESTCD", "Pharmacokinetic Test Short Name", 8),
    char("PCTEST", "Pharmacokinetic Test Name", 40),
    char("PCCAT", "Test Category", 20),
    char("PCORRES", "Result or Finding in Original Units", 40, "As sent by the laboratory."),
    char("PCORRESU", "Original Units", 30),
    char("PCSTRESC", "Character Result/Finding in Std Format", 40,
         "Copies per ug genomic DNA; censored values keep their sign and have no PCSTRESN."),
    num("PCSTRESN", "Numeric Result/Finding in Standard Units"),
    char("PCSTRESU", "Standard Units", 30, "copies/ug (C126079)."),
    char("PCSTAT", "Completion Status", 8),
    char("PCREASND", "Reason Test Not Done", 40),
    char("PCSPEC", "Specimen Material Type", 20),
    char("PCMETHOD", "Method of Test or Examination", 10),
    num("PCLLOQ", "Lower Limit of Quantitation", "In PCSTRESU."),
    VISITNUM, VISIT,
    char("PCDTC", "Date/Time of Specimen Collection", 19),
    num("PCDY", "Study Day of Specimen Collection"),
)


def _results(ctx: Context, pc: bool) -> Iterator[tuple[Any, ...]]:
    only_pc = Q(analyte__code__in=PC_ANALYTES)
    qs = (Result.objects.filter(subject__in=ctx.subject_ids(), superseded=False)
          .filter(only_pc if pc else ~only_pc)
          .order_by(*subject_order(), Collate(F("analyte__code"), "C"), "draw__collected_at", "pk")
          .values_list("subject_id", "analyte_id", "value_text", "unit_text", "value", "censored", "flag",
                       "ctcae_grade", "status", "draw__collected_at", "draw__specimen", "draw__accession_number"))
    return qs.iterator(chunk_size=CHUNK)


def _standard(value_text: str, value: float | None, censored: str) -> tuple[str, float | None]:
    """(--STRESC, --STRESN) of a result."""
    if value is None:
        return value_text.strip().upper(), None
    if censored:
        return f"{censored}{number_text(value)}", None
    return number_text(value), value


class _When:
    """Collection time facts per subject and time (several results share a draw): --DTC, --DY, visit,
    and whether it is on or before the first study treatment's date."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.subject_id = 0
        self.cache: dict[dt.datetime, tuple[Any, ...]] = {}

    def of(self, subject: SubjectRef, at: dt.datetime) -> tuple[Any, ...]:
        if subject.id != self.subject_id:
            self.subject_id, self.cache = subject.id, {}
        facts = self.cache.get(at)
        if facts is None:
            day = local_date(at, subject.tz)
            first = subject.first_exposure
            facts = (dtc(at, subject.tz), self.ctx.study_day(subject, at), *self.ctx.visit(subject, at),
                     first is not None and day is not None and day <= first)
            self.cache[at] = facts
        return facts


def _lb_items(ctx: Context) -> Iterator[tuple[tuple[int, int], bool, bool, list[Any]]]:
    """(group, before exposure, candidate for baseline, row with LBLOBXFL empty) per LB result."""
    tests, when = catalogue(), _When(ctx)
    for (pk, analyte_id, value_text, unit_text, value, censored, flag, grade, status, at, specimen,
         accession) in _results(ctx, pc=False):
        s, test = ctx.subjects[pk], tests[analyte_id]
        when_dtc, dy, visitnum, visit, before = when.of(s, at)
        done = status != CANCELLED
        stresc, stresn = _standard(value_text, value, censored) if done else ("", None)
        low, high = test.range_for(s.sex, s.age) if done and value is not None else (None, None)
        row = [ctx.studyid, "LB", s.usubjid, None, accession, test.testcd, test.name,
               value_text if done else "", unit_text if done else "", stresc, stresn,
               test.unit if done and value is not None else "", low, high, NRIND.get(flag, "") if done else "",
               "" if done else "NOT DONE", "" if done else "CANCELLED BY THE LABORATORY", test.loinc,
               SPECIMEN.get(specimen, specimen.upper()), "", test.toxicity if grade is not None else "",
               "" if grade is None else str(grade), visitnum, visit, when_dtc, dy]
        yield (pk, analyte_id), before, done, row


LOBXFL = [v.name for v in LB_VARIABLES].index("LBLOBXFL")


def _flag_baseline(items: Iterable[tuple[tuple[int, int], bool, bool, list[Any]]]) -> Iterator[Row]:
    """Set LBLOBXFL on the last done result before exposure of each (subject, test); rows keep their order
    (only the rows before exposure of the current test are held back)."""
    group: tuple[int, int] | None = None
    held: list[tuple[bool, list[Any]]] = []

    def release() -> Iterator[Row]:
        last = max((i for i, (done, _row) in enumerate(held) if done), default=None)
        for i, (_done, row) in enumerate(held):
            if i == last:
                row[LOBXFL] = "Y"
            yield row
        held.clear()

    for key, before, done, row in items:
        if key != group:
            yield from release()
            group = key
        if before:
            held.append((done, row))
        else:
            yield from release()
            yield row
    yield from release()


def lb_rows(ctx: Context) -> Iterator[Row]:
    return numbered(_flag_baseline(_lb_items(ctx)))


def pc_rows(ctx: Context) -> Iterator[Row]:
    tests, when = catalogue(), _When(ctx)
    for (pk, analyte_id, value_text, unit_text, value, censored, _flag, _grade, status, at, specimen,
         accession) in _results(ctx, pc=True):
        s, test = ctx.subjects[pk], tests[analyte_id]
        when_dtc, dy, visitnum, visit, _before = when.of(s, at)
        done = status != CANCELLED
        stresc, stresn = _standard(value_text, value, censored) if done else ("", None)
        yield (ctx.studyid, "PC", s.usubjid, None, accession, test.testcd, test.name, "CELLULAR KINETICS",
               value_text if done else "", unit_text if done else "", stresc, stresn,
               test.unit if done and value is not None else "", "" if done else "NOT DONE",
               "" if done else "CANCELLED BY THE LABORATORY", SPECIMEN.get(specimen, specimen.upper()), "QPCR",
               test.lloq, visitnum, visit, when_dtc, dy)


def _pc_numbered(ctx: Context) -> Iterator[Row]:
    return numbered(pc_rows(ctx))


# --- RS --------------------------------------------------------------------------------------------

Category = ResponseAssessment.Category
RESPONSE: dict[str, str] = {
    Category.CR_MRD_NEG: "CR", Category.CRI_MRD_NEG: "CRi", Category.CR: "CR", Category.CRI: "CRi", Category.PR: "PR",
    Category.NR: "NR", Category.PD: "PD", Category.RELAPSE: "RELAPSE"}
MRD_NEGATIVE = frozenset({Category.CR_MRD_NEG, Category.CRI_MRD_NEG})
ANTIGEN = {"positive": "POSITIVE", "negative": "NEGATIVE", "dim": "DIM", "lineage_switch": "LINEAGE SWITCH",
           "unknown": "NOT ASSESSED"}

RS_VARIABLES = (
    STUDYID, domain_var("RS"), USUBJID, seq("RS"),
    char("RSGRPID", "Group ID", 20, "RESP-<record id>: the rows of one response assessment."),
    char("RSTESTCD", "Assessment Short Name", 8,
         "OVRLRESP (overall response), MRDSTAT (MRD status), RLPSANTG (target antigen on relapsed blasts)."),
    char("RSTEST", "Assessment Name", 40),
    char("RSCAT", "Category for Assessment", 40),
    char("RSORRES", "Result or Finding in Original Units", 40),
    char("RSORRESU", "Original Units", 10),
    char("RSSTRESC", "Character Result/Finding in Std Format", 20,
         "OVRLRESP: CR, CRi, PR, NR, PD, RELAPSE. MRDSTAT: NEGATIVE for an MRD-negative category, else flow MRD "
         "below the trial's threshold is NEGATIVE and at or above it POSITIVE."),
    char("RSEVAL", "Evaluator", 20),
    VISITNUM, VISIT,
    char("RSDTC", "Date/Time of Assessment", 10),
    num("RSDY", "Study Day of Assessment"),
)


def _mrd(category: str, flow_pct: Decimal | None, threshold: Decimal) -> tuple[str, str, str] | None:
    """(RSORRES, RSORRESU, RSSTRESC) of the MRD status, or None when MRD was not assessed."""
    if flow_pct is None:
        return ("NEGATIVE", "", "NEGATIVE") if category in MRD_NEGATIVE else None
    status = "NEGATIVE" if category in MRD_NEGATIVE or flow_pct < threshold else "POSITIVE"
    return number_text(float(flow_pct)), "%", status


def rs_rows(ctx: Context) -> Iterator[Row]:
    threshold = ctx.scope.trial.mrd_negative_below_pct
    qs = (ResponseAssessment.objects.filter(subject__in=ctx.subject_ids())
          .order_by(*subject_order(), "assessed_on", "pk")
          .values_list("subject_id", "pk", "assessed_on", "category", "mrd_flow_pct", "antigen_status"))

    def rows() -> Iterator[Row]:
        for pk, response_id, day, category, flow_pct, antigen in qs.iterator(chunk_size=CHUNK):
            s = ctx.subjects[pk]
            visitnum, visit = ctx.visit(s, day)
            head = (ctx.studyid, "RS", s.usubjid, None, f"RESP-{response_id}")
            tail = ("INVESTIGATOR", visitnum, visit, dtc(day), ctx.study_day(s, day))
            label = Category(category).label
            yield (*head, "OVRLRESP", "Overall Response", "PROTOCOL RESPONSE CRITERIA", label, "",
                   RESPONSE[category], *tail)
            mrd = _mrd(category, flow_pct, threshold)
            if mrd is not None:
                yield (*head, "MRDSTAT", "Minimal Residual Disease Status", "MINIMAL RESIDUAL DISEASE", mrd[0],
                       mrd[1], mrd[2], *tail)
            if antigen:
                yield (*head, "RLPSANTG", "Target Antigen on Relapsed Blasts", "RELAPSE", antigen, "",
                       ANTIGEN.get(antigen, antigen.upper()), *tail)

    return numbered(rows())


DATASETS = (
    Dataset("LB", "Laboratory Test Results", LB_VARIABLES, lb_rows, "One record per lab test per time point"),
    Dataset("PC", "Pharmacokinetics Concentrations", PC_VARIABLES, _pc_numbered,
            "One record per CAR transgene measurement per time point"),
    Dataset("RS", "Disease Response", RS_VARIABLES, rs_rows, "One record per response assessment per test"),
)
