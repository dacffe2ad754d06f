"""Events: AE with its supplemental qualifiers (SUPPAE), and FA, the dated ASTCT assessments of each CRS
and ICANS episode.

AETOXGR is the grade as text ("3", not "Grade 3"). Two scales share the dataset: CTCAE v5.0 for adverse
events and ASTCT 2019 for CRS and ICANS (where AETOXGR is the episode's maximum over its assessments,
overrides included), so each record names its scale in SUPPAE (QNAM TOXGRSCL), and define.csv says the
same per AECAT (DOMAIN 1.6 and 6.2). The assessments behind an episode's grade are in FA, linked to
their AE by FALNKID = AELNKID.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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
    yn,
)
from patients.models import OTHER_SPECIFY, AdverseEvent, Attribution, CrsAssessment, IcansAssessment

Category = AdverseEvent.Category
CRS_PT = "Cytokine release syndrome"
CRS_PT_CODE = 10052015  # MedDRA PT, as CTCAE v5.0 lists it (DOMAIN 1.6)
ICANS_PT = "Immune effector cell-associated neurotoxicity syndrome"
CRS_SOC = "Immune system disorders"  # the SOC of the CTCAE v5.0 term Cytokine release syndrome
ICANS_SOC = "Nervous system disorders"

RELATION = {Attribution.NOT_RELATED: "NOT RELATED", Attribution.UNLIKELY: "UNLIKELY RELATED",
            Attribution.POSSIBLE: "POSSIBLY RELATED", Attribution.PROBABLE: "PROBABLY RELATED",
            Attribution.DEFINITE: "RELATED"}
OUTCOME = {"recovered": "RECOVERED/RESOLVED", "recovering": "RECOVERING/RESOLVING",
           "not_recovered": "NOT RECOVERED/NOT RESOLVED", "sequelae": "RECOVERED/RESOLVED WITH SEQUELAE",
           "fatal": "FATAL", "unknown": "UNKNOWN"}
ACTION = {"none": "NOT APPLICABLE", "dose_not_changed": "DOSE NOT CHANGED", "fraction_held": "DRUG INTERRUPTED",
          "fraction_cancelled": "DRUG WITHDRAWN", "not_applicable": "NOT APPLICABLE"}

AE_VARIABLES = (
    STUDYID, domain_var("AE"), USUBJID, seq("AE"),
    char("AELNKID", "Link ID", 20, "AE-<record id>; FA rows of a CRS or ICANS episode carry it in FALNKID."),
    char("AETERM", "Reported Term for the Adverse Event", 200),
    char("AEDECOD", "Dictionary-Derived Term", 200,
         "The CTCAE v5.0 dictionary term the event is coded to (a MedDRA LLT); the reported term for an "
         "\"Other, specify\" or a not yet coded event; the MedDRA PT for CRS and ICANS."),
    num("AEPTCD", "Preferred Term Code", "MedDRA code of the dictionary term (as recorded when not coded); "
        "10052015 for CRS."),
    char("AEBODSYS", "Body System or Organ Class", 200,
         "MedDRA system organ class of the dictionary term (as given for \"Other, specify\"); Immune system "
         "disorders for CRS, Nervous system disorders for ICANS."),
    char("AECAT", "Category for Adverse Event", 10, "CRS or ICANS (graded ASTCT 2019); empty for other events."),
    char("AESER", "Serious Event", 1),
    char("AEACN", "Action Taken with Study Treatment", 30, "About the remaining CAR-T fractions."),
    char("AEREL", "Causality", 20, "Relationship to the CAR-T product; to lymphodepletion: SUPPAE AERELLD."),
    char("AEOUT", "Outcome of Adverse Event", 40),
    char("AESCONG", "Congenital Anomaly or Birth Defect", 1),
    char("AESDISAB", "Persist or Signif Disability/Incapacity", 1),
    char("AESDTH", "Results in Death", 1),
    char("AESHOSP", "Requires or Prolongs Hospitalization", 1),
    char("AESLIFE", "Is Life Threatening", 1),
    char("AESMIE", "Other Medically Important Serious Event", 1),
    char("AETOXGR", "Standard Toxicity Grade", 1,
         "CTCAE v5.0 grade; for AECAT CRS and ICANS the ASTCT 2019 grade, maximum over the episode's "
         "assessments. The scale of each record: SUPPAE TOXGRSCL."),
    char("AESTDTC", "Start Date/Time of Adverse Event", 10),
    char("AEENDTC", "End Date/Time of Adverse Event", 10),
    num("AESTDY", "Study Day of Start of Adverse Event"),
    num("AEENDY", "Study Day of End of Adverse Event"),
)

SUPP_VARIABLES = (
    STUDYID, char("RDOMAIN", "Related Domain Abbreviation", 2), USUBJID,
    char("IDVAR", "Identifying Variable", 8), char("IDVARVAL", "Identifying Variable Value", 20),
    char("QNAM", "Qualifier Variable Name", 8), char("QLABEL", "Qualifier Variable Label", 40),
    char("QVAL", "Data Value", 200), char("QORIG", "Origin", 20), char("QEVAL", "Evaluator", 20),
)


def _events(ctx: Context) -> Iterator[tuple[Any, ...]]:
    qs = (AdverseEvent.objects.filter(subject__in=ctx.subject_ids())
          .order_by(*subject_order(), "onset_on", "pk")
          .values_list("subject_id", "pk", "category", "term", "meddra_code", "onset_on", "resolved_on", "grade",
                       "grade_scale", "serious", "sae_death", "sae_life_threatening", "sae_hospitalisation",
                       "sae_disability", "sae_congenital", "sae_important", "related_to_product",
                       "related_to_lymphodepletion", "outcome", "action_taken", "ctcae_term__term",
                       "system_organ_class"))
    return qs.iterator(chunk_size=CHUNK)


def _decod(category: str, term: str, code: str, coded: str | None, soc: str) -> tuple[str, int | None, str]:
    """AEDECOD, AEPTCD and AEBODSYS: from the dictionary term when the event is coded to one."""
    if category == Category.CRS:
        return CRS_PT, int(code) if code.isdigit() else CRS_PT_CODE, soc or CRS_SOC
    if category == Category.ICANS:
        return ICANS_PT, int(code) if code.isdigit() else None, soc or ICANS_SOC
    decod = coded if coded and not coded.endswith(OTHER_SPECIFY) else term
    return decod, int(code) if code.isdigit() else None, soc


def _ae_row(ctx: Context, event: tuple[Any, ...]) -> Row:
    (pk, event_id, category, term, code, onset, resolved, grade, _scale, serious, death, life, hosp, disab, cong,
     important, rel_product, _rel_ld, outcome, action, coded, soc) = event
    s = ctx.subjects[pk]
    decod, ptcd, bodsys = _decod(category, term, code, coded, soc)
    return (ctx.studyid, "AE", s.usubjid, None, f"AE-{event_id}", term, decod, ptcd, bodsys,
            "" if category == Category.CTCAE else category.upper(), yn(serious), ACTION.get(action, ""),
            RELATION[rel_product], OUTCOME.get(outcome, ""), yn(cong), yn(disab), yn(death), yn(hosp), yn(life),
            yn(important), "" if grade is None else str(grade), dtc(onset), dtc(resolved), ctx.study_day(s, onset),
            ctx.study_day(s, resolved))


def ae_rows(ctx: Context) -> Iterator[Row]:
    return numbered(_ae_row(ctx, event) for event in _events(ctx))


def suppae_rows(ctx: Context) -> Iterator[Row]:
    """Per AE (in AE's order, so IDVARVAL is its AESEQ): the grading scale and the relationship to
    lymphodepletion."""
    current, number = None, 0
    for event in _events(ctx):
        s = ctx.subjects[event[0]]
        if s.usubjid != current:
            current, number = s.usubjid, 0
        number += 1
        base = (ctx.studyid, "AE", s.usubjid, "AESEQ", str(number))
        yield (*base, "TOXGRSCL", "Toxicity Grading Scale", event[8], "ASSIGNED", "")
        yield (*base, "AERELLD", "Relationship to Lymphodepletion", RELATION[event[17]], "CRF", "INVESTIGATOR")


# --- FA: ASTCT assessments of CRS and ICANS episodes -------------------------------------------------

FA_VARIABLES = (
    STUDYID, domain_var("FA"), USUBJID, seq("FA"),
    char("FALNKID", "Link ID", 20, "The episode's AELNKID."),
    char("FATESTCD", "Findings About Test Short Name", 8, "ASTCTGR: the assessment's grade."),
    char("FATEST", "Findings About Test Name", 40),
    char("FAOBJ", "Object of the Observation", 60),
    char("FAORRES", "Result or Finding in Original Units", 1, "Investigator's grade where overridden, else "
         "derived."),
    char("FASTRESC", "Character Result/Finding in Std Format", 1),
    num("FASTRESN", "Numeric Result/Finding in Standard Units"),
    char("FAEVAL", "Evaluator", 20, "INVESTIGATOR when the derived grade was overridden, else DERIVED."),
    char("FADTC", "Date/Time of Collection", 19),
    num("FADY", "Study Day of Collection"),
)


def _assessments(ctx: Context, model: Any, obj: str) -> Iterator[tuple[Any, Row]]:
    qs = (model.objects.filter(event__subject__in=ctx.subject_ids())
          .order_by(*subject_order("event__subject"), "assessed_at", "pk")
          .values_list("event__subject_id", "event_id", "assessed_at", "derived_grade", "override_grade"))
    for pk, event_id, at, derived, override in qs.iterator(chunk_size=CHUNK):
        s = ctx.subjects[pk]
        grade = derived if override is None else override
        when = dtc(at, s.tz)
        row = (ctx.studyid, "FA", s.usubjid, None, f"AE-{event_id}", "ASTCTGR", "ASTCT 2019 Consensus Grade", obj,
               str(grade), str(grade), grade, "DERIVED" if override is None else "INVESTIGATOR", when,
               ctx.study_day(s, at))
        yield (subject_key(s), when, obj), row


def fa_rows(ctx: Context) -> Iterator[Row]:
    return numbered(merged(_assessments(ctx, CrsAssessment, CRS_PT), _assessments(ctx, IcansAssessment, ICANS_PT)))


DATASETS = (
    Dataset("AE", "Adverse Events", AE_VARIABLES, ae_rows, "One record per adverse event (CRS, ICANS episode)"),
    Dataset("SUPPAE", "Supplemental Qualifiers for AE", SUPP_VARIABLES, suppae_rows,
            "One record per supplemental qualifier per AE"),
    Dataset("FA", "Findings About Events or Interventions", FA_VARIABLES, fa_rows,
            "One record per CRS or ICANS assessment"),
)
