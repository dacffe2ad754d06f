"""Special-purpose and disposition datasets: DM (one row per subject), DS (milestones and disposition
events) and SV (protocol visits actually done)."""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterable, Iterator
from itertools import groupby
from typing import Any

from django.db.models import OuterRef, Subquery

from assays.models import LabDraw
from exports.sdtm.common import (
    CHUNK,
    STUDYID,
    USUBJID,
    VISIT,
    VISITNUM,
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
from patients.models import (
    ApheresisCollection,
    Consent,
    FollowUp,
    Infusion,
    LymphodepletionDose,
    OffStudyReason,
    ResponseAssessment,
    Subject,
    SubjectStatus,
    SubjectTransition,
)
from patients.timeline import local_date

# --- DM --------------------------------------------------------------------------------------------

DM_VARIABLES = (
    STUDYID, domain_var("DM"), USUBJID,
    char("SUBJID", "Subject Identifier for the Study", 40),
    char("RFSTDTC", "Subject Reference Start Date/Time", 19,
         "Day 0: the first CAR-T infusion (first fraction of course 1), site time (DOMAIN 5.8). --DY counts "
         "from its date, with no day 0."),
    char("RFENDTC", "Subject Reference End Date/Time", 19, "Date the subject went off study; empty while on study."),
    char("RFXSTDTC", "Date/Time of First Study Treatment", 19,
         "Earliest EXSTDTC: the first lymphodepletion dose (or the first infusion without lymphodepletion)."),
    char("RFXENDTC", "Date/Time of Last Study Treatment", 19, "Latest EXSTDTC."),
    char("RFICDTC", "Date/Time of Informed Consent", 10, "First informed consent."),
    char("DTHDTC", "Date/Time of Death", 10, "Death follow-up record, else the off-study date when the reason is "
         "death."),
    char("DTHFL", "Subject Death Flag", 1),
    char("SITEID", "Study Site Identifier", 10),
    num("AGE", "Age", "Age at consent, in years."),
    char("AGEU", "Age Units", 5),
    char("SEX", "Sex", 1),
    char("ARMCD", "Planned Arm Code", 20, "The enrolment cohort's code."),
    char("ARM", "Description of Planned Arm", 200, "The enrolment cohort's name."),
    char("ACTARMCD", "Actual Arm Code", 20, "The cohort, once the subject was infused."),
    char("ACTARM", "Description of Actual Arm", 200),
    char("ARMNRS", "Reason Arm and/or Actual Arm is Null", 30),
    char("COUNTRY", "Country", 2, "The site's country, ISO 3166-1 alpha-2 as stored (SDTM expects alpha-3)."),
)


def _first(model: Any, path: str, field: str, descending: bool = False, **filters: Any) -> Subquery:
    order = f"-{field}" if descending else field
    qs = model.objects.filter(**{path: OuterRef("pk")}, **filters).order_by(order, "pk").values(field)[:1]
    return Subquery(qs)


def _arm(cohort: tuple[str, str] | None, infused: bool, status: str) -> tuple[str, str, str, str, str]:
    """(ARMCD, ARM, ACTARMCD, ACTARM, ARMNRS) from the cohort and whether the subject was infused."""
    if cohort is None:
        return "", "", "", "", "SCREEN FAILURE" if status == SubjectStatus.SCREEN_FAILED else "NOT ASSIGNED"
    code, name = cohort
    if not infused:
        return code, name, "", "", "ASSIGNED, NOT TREATED"
    return code, name, code, name, ""


def dm_rows(ctx: Context) -> Iterator[Row]:
    qs = (Subject.objects.filter(pk__in=ctx.subject_ids())
          .annotate(first_consent=_first(Consent, "subject", "consented_on"),
                    first_infused_at=_first(Infusion, "subject", "infused_at"),
                    first_infused_on=_first(Infusion, "subject", "infused_on"),
                    last_infused_at=_first(Infusion, "subject", "infused_at", descending=True),
                    last_infused_on=_first(Infusion, "subject", "infused_on", descending=True),
                    first_ld=_first(LymphodepletionDose, "course__subject", "given_on"),
                    last_ld=_first(LymphodepletionDose, "course__subject", "given_on", descending=True),
                    death_on=_first(FollowUp, "subject", "event_on", kind=FollowUp.Kind.DEATH))
          .values_list("pk", "age_at_consent", "sex", "status", "cohort__code", "cohort__name", "site__country",
                       "off_study_on", "off_study_reason", "first_consent", "first_infused_at", "first_infused_on",
                       "last_infused_at", "last_infused_on", "first_ld", "last_ld", "death_on")
          .order_by(*subject_order("")))
    for (pk, age, sex, status, cohort_code, cohort_name, country, off_on, off_reason, consent, first_at, first_on,
         last_at, last_on, first_ld, last_ld, death_on) in qs.iterator(chunk_size=CHUNK):
        s = ctx.subjects[pk]
        death = death_on or (off_on if off_reason == OffStudyReason.DEATH else None)
        start = dtc(first_ld) if first_ld is not None and (first_on is None or first_ld < first_on) else dtc(
            first_at, s.tz)
        end = dtc(last_ld) if last_ld is not None and (last_on is None or last_ld > last_on) else dtc(last_at, s.tz)
        cohort = (cohort_code, cohort_name) if cohort_code else None
        yield (ctx.studyid, "DM", s.usubjid, s.subjid, dtc(first_at, s.tz), dtc(off_on), start, end, dtc(consent),
               dtc(death), "Y" if death else "", s.siteid, age, "YEARS" if age is not None else "", sex,
               *_arm(cohort, first_at is not None, status), country)


# --- DS --------------------------------------------------------------------------------------------

MILESTONE, DISPOSITION = "PROTOCOL MILESTONE", "DISPOSITION EVENT"
OFF_STUDY_DECOD: dict[str, str] = {
    OffStudyReason.CONSENT_WITHDRAWN: "WITHDRAWAL BY SUBJECT", OffStudyReason.DEATH: "DEATH",
    OffStudyReason.LOST_TO_FOLLOW_UP: "LOST TO FOLLOW-UP", OffStudyReason.INVESTIGATOR_DECISION: "PHYSICIAN DECISION",
    OffStudyReason.COMPLETED: "COMPLETED", OffStudyReason.MANUFACTURING_FAILURE: "OTHER",
    OffStudyReason.OTHER: "OTHER",
}

DS_VARIABLES = (
    STUDYID, domain_var("DS"), USUBJID, seq("DS"),
    char("DSTERM", "Reported Term for the Disposition Event", 200),
    char("DSDECOD", "Standardized Disposition Term", 40,
         "Milestones: INFORMED CONSENT OBTAINED, ENROLLED, LEUKAPHERESIS, CAR-T INFUSION (sponsor-defined); "
         "disposition events: NCOMPLT terms."),
    char("DSCAT", "Category for Disposition Event", 20),
    char("DSSTDTC", "Start Date/Time of Disposition Event", 10),
    num("DSSTDY", "Study Day of Start of Disposition Event"),
)

_DsEvent = tuple[int, dt.date | None, str, str, str]  # subject id, date (never None here), term, decod, category


def _ds_stream(ctx: Context, events: Iterable[_DsEvent], rank: int) -> Iterator[tuple[Any, Row]]:
    for subject_id, day, term, decod, cat in events:
        s = ctx.subjects[subject_id]
        row = (ctx.studyid, "DS", s.usubjid, None, term, decod, cat, dtc(day), ctx.study_day(s, day))
        yield (subject_key(s), day, rank), row


def _ds_sources(ctx: Context) -> list[Iterator[tuple[Any, Row]]]:
    ids = ctx.subject_ids()
    consents = (Consent.objects.filter(subject__in=ids).order_by(*subject_order(), "consented_on", "pk")
                .values_list("subject_id", "consented_on").iterator(chunk_size=CHUNK))
    subjects = Subject.objects.filter(pk__in=ids).order_by(*subject_order(""))
    enrolled = (subjects.filter(enrolled_on__isnull=False).values_list("pk", "enrolled_on")
                .iterator(chunk_size=CHUNK))
    collections = (ApheresisCollection.objects.filter(subject__in=ids)
                   .order_by(*subject_order(), "collected_on", "pk")
                   .values_list("subject_id", "collected_on").iterator(chunk_size=CHUNK))
    infusions = (Infusion.objects.filter(subject__in=ids, fraction_number=1)
                 .order_by(*subject_order(), "infused_on", "pk")
                 .values_list("subject_id", "infused_on", "course_number").iterator(chunk_size=CHUNK))
    failures = (SubjectTransition.objects.filter(subject__in=ids, to_status=SubjectStatus.SCREEN_FAILED)
                .order_by(*subject_order(), "effective_on", "pk")
                .values_list("subject_id", "effective_on", "reason").iterator(chunk_size=CHUNK))
    off = (subjects.filter(off_study_on__isnull=False)
           .values_list("pk", "off_study_on", "off_study_reason", "off_study_detail").iterator(chunk_size=CHUNK))
    consent = "INFORMED CONSENT OBTAINED"
    return [
        _ds_stream(ctx, ((pk, day, consent, consent, MILESTONE) for pk, day in consents), 1),
        _ds_stream(ctx, ((pk, day, "ENROLLED", "ENROLLED", MILESTONE) for pk, day in enrolled), 2),
        _ds_stream(ctx, ((pk, day, "LEUKAPHERESIS", "LEUKAPHERESIS", MILESTONE) for pk, day in collections), 3),
        _ds_stream(ctx, ((pk, day, f"CAR-T INFUSION, COURSE {n}", "CAR-T INFUSION", MILESTONE)
                         for pk, day, n in infusions), 4),
        _ds_stream(ctx, ((pk, day, reason or "SCREEN FAILURE", "SCREEN FAILURE", DISPOSITION)
                         for pk, day, reason in failures), 5),
        _ds_stream(ctx, ((pk, day, detail or OffStudyReason(reason).label, OFF_STUDY_DECOD[reason], DISPOSITION)
                         for pk, day, reason, detail in off), 6),
    ]


def ds_rows(ctx: Context) -> Iterator[Row]:
    return numbered(merged(*_ds_sources(ctx)))


# --- SV --------------------------------------------------------------------------------------------

SV_VARIABLES = (
    STUDYID, domain_var("SV"), USUBJID, VISITNUM, VISIT,
    char("SVSTDTC", "Start Date/Time of Visit", 10,
         "Earliest date of the visit's records: lab draws, response assessments, lymphodepletion doses and "
         "infusions whose date the visit's window holds (patients.timeline.match_visit)."),
    char("SVENDTC", "End Date/Time of Visit", 10, "Latest such date."),
    num("SVSTDY", "Study Day of Start of Visit"),
    num("SVENDY", "Study Day of End of Visit"),
)


def _dated(ctx: Context) -> list[Iterator[tuple[tuple[str, str], int, Any]]]:
    """(subject key, subject id, date or time) of every record that marks a visit, per source, sorted."""
    ids = ctx.subject_ids()
    sources = [
        LabDraw.objects.filter(subject__in=ids).order_by(*subject_order()).values_list("subject_id", "collected_at"),
        ResponseAssessment.objects.filter(subject__in=ids).order_by(*subject_order())
        .values_list("subject_id", "assessed_on"),
        Infusion.objects.filter(subject__in=ids).order_by(*subject_order()).values_list("subject_id", "infused_at"),
        LymphodepletionDose.objects.filter(course__subject__in=ids).order_by(*subject_order("course__subject"))
        .values_list("course__subject_id", "given_on"),
    ]
    return [((subject_key(ctx.subjects[pk]), pk, when) for pk, when in qs.iterator(chunk_size=CHUNK))
            for qs in sources]


def sv_rows(ctx: Context) -> Iterator[Row]:
    stream = heapq.merge(*_dated(ctx), key=lambda item: item[0])
    for _key, items in groupby(stream, key=lambda item: item[0]):
        visits: dict[int, tuple[str, dt.date, dt.date]] = {}
        subject = None
        for _k, pk, when in items:
            subject = ctx.subjects[pk]
            number, name = ctx.visit(subject, when)
            day = local_date(when, subject.tz)
            if number is None or day is None:
                continue
            _name, first, last = visits.get(number, (name, day, day))
            visits[number] = (name, min(first, day), max(last, day))
        if subject is None:
            continue
        for number in sorted(visits):
            name, first, last = visits[number]
            yield (ctx.studyid, "SV", subject.usubjid, number, name, dtc(first), dtc(last),
                   ctx.study_day(subject, first), ctx.study_day(subject, last))


DATASETS = (
    Dataset("DM", "Demographics", DM_VARIABLES, dm_rows, "One record per subject"),
    Dataset("DS", "Disposition", DS_VARIABLES, ds_rows, "One record per disposition status or protocol milestone"),
    Dataset("SV", "Subject Visits", SV_VARIABLES, sv_rows, "One record per actual visit per subject"),
)
