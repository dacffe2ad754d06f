"""Interventions: EX (each lymphodepletion dose and each CAR-T fraction) and CM (concomitant medications and
bridging therapy)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.db.models import F
from django.db.models.functions import Collate

from exports.sdtm.common import (
    CHUNK,
    STUDYID,
    USUBJID,
    Context,
    Dataset,
    Row,
    char,
    domain_var,
    dtc,
    merged,
    num,
    numbered,
    seq,
    subject_key,
    subject_order,
)
from patients.models import BridgingTherapy, ConcomitantMedication, Infusion, LymphodepletionDose
from trials.models import RegimenAgent

# --- EX --------------------------------------------------------------------------------------------

EX_VARIABLES = (
    STUDYID, domain_var("EX"), USUBJID, seq("EX"),
    char("EXGRPID", "Group ID", 10, "COURSE n: the infusion course the dose belongs to (n = 2 for re-infusion)."),
    char("EXTRT", "Name of Treatment", 100, "Lymphodepletion agent, or the CAR-T product's name."),
    char("EXCAT", "Category of Treatment", 20, "LYMPHODEPLETION or CAR-T."),
    num("EXDOSE", "Dose", "Lymphodepletion: administered mg / the course's BSA (m2), to 0.01 mg/m2. "
        "CAR-T: CAR+ viable cells/kg of this fraction / 10^6."),
    char("EXDOSU", "Dose Units", 15, "mg/m2 (C67402); 10^6 cells/kg is sponsor-defined (no CT unit found, "
         "DOMAIN 6.2)."),
    char("EXDOSFRM", "Dose Form", 20),
    char("EXDOSFRQ", "Dosing Frequency per Interval", 10, "QD for lymphodepletion days, ONCE for a CAR-T fraction."),
    char("EXROUTE", "Route of Administration", 20),
    char("EXLOT", "Lot Number", 40, "CAR-T product lot (chain of identity)."),
    char("EXADJ", "Reason for Dose Adjustment", 200, "The recorded dose deviation reason."),
    char("EXTPT", "Planned Time Point Name", 20,
         "Lymphodepletion: the protocol day of the dose (e.g. DAY -5); CAR-T: FRACTION k OF n."),
    char("EXSTDTC", "Start Date/Time of Treatment", 19),
    char("EXENDTC", "End Date/Time of Treatment", 19),
    num("EXSTDY", "Study Day of Start of Treatment"),
    num("EXENDY", "Study Day of End of Treatment"),
)

CENTI = Decimal("0.01")


def _ld_stream(ctx: Context) -> Iterator[tuple[Any, Row]]:
    qs = (LymphodepletionDose.objects.filter(course__subject__in=ctx.subject_ids())
          .order_by(*subject_order("course__subject"), "given_on", Collate(F("agent__agent"), "C"), "pk")
          .values_list("course__subject_id", "agent__agent", "given_on", "administered_mg", "course__bsa_m2",
                       "course__course_number", "deviation_reason", "day"))
    for pk, agent, given_on, mg, bsa, course, deviation, day in qs.iterator(chunk_size=CHUNK):
        s = ctx.subjects[pk]
        dose = float((Decimal(mg) / Decimal(bsa)).quantize(CENTI, rounding=ROUND_HALF_EVEN))
        when, dy = dtc(given_on), ctx.study_day(s, given_on)
        row = (ctx.studyid, "EX", s.usubjid, None, f"COURSE {course}", RegimenAgent.Agent(agent).label.upper(),
               "LYMPHODEPLETION", dose, "mg/m2", "SOLUTION", "QD", "INTRAVENOUS", "", deviation, f"DAY {day}",
               when, when, dy, dy)
        yield (subject_key(s), when, 0, agent), row


def _infusion_stream(ctx: Context) -> Iterator[tuple[Any, Row]]:
    qs = (Infusion.objects.filter(subject__in=ctx.subject_ids())
          .order_by(*subject_order(), "infused_at", "pk")
          .values_list("subject_id", "lot__product__name", "lot__lot_number", "infused_at", "cells_per_kg",
                       "course_number", "fraction_number", "planned_fractions"))
    for pk, product, lot, infused_at, cells, course, fraction, planned in qs.iterator(chunk_size=CHUNK):
        s = ctx.subjects[pk]
        when, dy = dtc(infused_at, s.tz), ctx.study_day(s, infused_at)
        row = (ctx.studyid, "EX", s.usubjid, None, f"COURSE {course}", product, "CAR-T",
               float(Decimal(cells) / 1_000_000), "10^6 cells/kg", "SUSPENSION", "ONCE", "INTRAVENOUS", lot, "",
               f"FRACTION {fraction} OF {planned}", when, when, dy, dy)
        yield (subject_key(s), when, 1, str(fraction)), row


def ex_rows(ctx: Context) -> Iterator[Row]:
    return numbered(merged(_ld_stream(ctx), _infusion_stream(ctx)))


# --- CM --------------------------------------------------------------------------------------------

ROUTES = {"iv": "INTRAVENOUS", "oral": "ORAL", "sc": "SUBCUTANEOUS", "it": "INTRATHECAL", "other": "OTHER"}

CM_VARIABLES = (
    STUDYID, domain_var("CM"), USUBJID, seq("CM"),
    char("CMTRT", "Reported Name of Drug, Med, or Therapy", 200),
    char("CMDECOD", "Standardized Medication Name", 100,
         "The catalogue name of a listed drug in capitals; not WHODrug-coded. Empty for other drugs and bridging."),
    char("CMCAT", "Category for Medication", 30, "CONCOMITANT MEDICATION or BRIDGING THERAPY."),
    char("CMINDC", "Indication", 200, "As recorded, else the term of the adverse event it treats."),
    num("CMDOSE", "Dose per Administration"),
    char("CMDOSU", "Dose Units", 10),
    char("CMDOSFRQ", "Dosing Frequency per Interval", 10),
    char("CMROUTE", "Route of Administration", 20),
    char("CMSTDTC", "Start Date/Time of Medication", 19),
    char("CMENDTC", "End Date/Time of Medication", 19),
    num("CMSTDY", "Study Day of Start of Medication"),
    num("CMENDY", "Study Day of End of Medication"),
)


def _medication_stream(ctx: Context) -> Iterator[tuple[Any, Row]]:
    qs = (ConcomitantMedication.objects.filter(subject__in=ctx.subject_ids())
          .order_by(*subject_order(), "given_at", "pk")
          .values_list("subject_id", "drug", "drug_name", "dose", "dose_unit", "route", "given_at", "indication",
                       "adverse_event__term"))
    other = ConcomitantMedication.Drug.OTHER
    for pk, drug, name, dose, unit, route, given_at, indication, event in qs.iterator(chunk_size=CHUNK):
        s = ctx.subjects[pk]
        label = ConcomitantMedication.Drug(drug).label
        when, dy = dtc(given_at, s.tz), ctx.study_day(s, given_at)
        row = (ctx.studyid, "CM", s.usubjid, None, name or label, "" if drug == other else drug.upper(),
               "CONCOMITANT MEDICATION", indication or event or "", float(dose), unit, "ONCE",
               ROUTES.get(route, route.upper()), when, when, dy, dy)
        yield (subject_key(s), when, 0), row


def _bridging_stream(ctx: Context) -> Iterator[tuple[Any, Row]]:
    qs = (BridgingTherapy.objects.filter(subject__in=ctx.subject_ids())
          .order_by(*subject_order(), "started_on", "pk")
          .values_list("subject_id", "regimen", "started_on", "ended_on"))
    for pk, regimen, started, ended in qs.iterator(chunk_size=CHUNK):
        s = ctx.subjects[pk]
        row = (ctx.studyid, "CM", s.usubjid, None, regimen, "", "BRIDGING THERAPY", "", None, "", "", "",
               dtc(started), dtc(ended), ctx.study_day(s, started), ctx.study_day(s, ended))
        yield (subject_key(s), dtc(started), 1), row


def cm_rows(ctx: Context) -> Iterator[Row]:
    return numbered(merged(_bridging_stream(ctx), _medication_stream(ctx)))


DATASETS = (
    Dataset("EX", "Exposure", EX_VARIABLES, ex_rows, "One record per lymphodepletion dose or CAR-T fraction"),
    Dataset("CM", "Concomitant Medications", CM_VARIABLES, cm_rows, "One record per medication administration"),
)
