"""Response assessments and follow-up (DOMAIN §4). Relapse and MRD thresholds are trial settings."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from config.errors import RuleViolation, StateConflict
from patients.models import FollowUp, OffStudyReason, ResponseAssessment, Subject, SubjectStatus
from patients.selectors import first_consent, records_of
from patients.services.enrolment import _lock, check_can_enter, check_consented, check_not_future, move_subject
from patients.timeline import Timeline, VisitWindow, timeline_of
from trials.models import Visit

C = ResponseAssessment.Category
REMISSION = (C.CR, C.CRI, C.CR_MRD_NEG, C.CRI_MRD_NEG)


def check_response(*, subject: Subject, assessed_on: dt.date, category: str, visit: Visit | None,
                   values: dict[str, Any]) -> None:
    """A response is assessed after infusion, and its category agrees with the measurements."""
    timeline = timeline_of(subject)
    if timeline.day0 is None or assessed_on < timeline.day0:
        raise StateConflict("not_infused", f"{subject.code} has no CAR-T infusion before {assessed_on:%d %b %Y}.")
    check_not_future(day=assessed_on, site=subject.site, field="assessed_on")
    check_consented(subject=subject, on=assessed_on, field="assessed_on")
    trial = subject.trial
    if visit is not None:
        if visit.trial_id != subject.trial_id:
            raise RuleViolation("visit_not_in_trial", f"Choose a visit of {trial.code}.", field="visit")
        check_visit_window(visit=visit, timeline=timeline, on=assessed_on, field="assessed_on")
    blasts: Decimal | None = values.get("marrow_blasts_pct")
    mrd: Decimal | None = values.get("mrd_flow_pct")
    if category in REMISSION and blasts is not None and blasts >= Decimal(5):
        raise RuleViolation("remission_with_blasts", "CR/CRi needs marrow blasts below 5%.",
                            field="marrow_blasts_pct")
    if category in (C.CR_MRD_NEG, C.CRI_MRD_NEG) and (mrd is None or mrd >= trial.mrd_negative_below_pct):
        raise RuleViolation("mrd_not_negative", f"MRD-negative needs flow MRD below {trial.mrd_negative_below_pct}%.",
                            field="mrd_flow_pct")
    if category == C.RELAPSE:
        if not values.get("antigen_status"):
            raise RuleViolation("antigen_status_required", "A relapse records the target antigen's status "
                                "(e.g. CD19-negative).", field="antigen_status")
        had_remission = subject.responses.filter(category__in=REMISSION, assessed_on__lt=assessed_on).exists()
        if not had_remission:
            raise RuleViolation("relapse_without_remission", "Relapse follows a CR or CRi; record no response or "
                                "progression instead.", field="category")
    elif values.get("antigen_status"):
        raise RuleViolation("antigen_status_for_relapse", "Antigen status is recorded for relapses.",
                            field="antigen_status")


def check_visit_window(*, visit: Visit, timeline: Timeline, on: dt.date, field: str) -> None:
    """A record made after day 0 at a protocol visit falls in that visit's window, counted from day 0 of
    the infusion course it follows (DESIGN "Protocol timeline": each course has its own day 0)."""
    window = VisitWindow.of(visit)
    number = timeline.course_of(on)
    course_day = timeline.course_day(on, number)
    if not window.holds(course_day):
        where = f"day {course_day} of course {number} (study day {timeline.study_day(on)})" if number else \
            "before the first infusion"
        raise RuleViolation("outside_visit_window", f"{window.describe()} of its course; {on:%d %b %Y} is {where}.",
                            field=field)


@transaction.atomic
def record_response(*, subject: Subject, assessed_on: dt.date, category: str, by: User,
                    visit: Visit | None = None, **values: Any) -> ResponseAssessment:
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    check_response(subject=subject, assessed_on=assessed_on, category=category, visit=visit, values=values)
    response = ResponseAssessment(subject=subject, assessed_on=assessed_on, category=category, visit=visit,
                                  recorded_by=by, **values)
    response.full_clean()
    response.save()
    return response


OFF_STUDY_FOR: dict[str, OffStudyReason] = {FollowUp.Kind.DEATH: OffStudyReason.DEATH,
                                             FollowUp.Kind.LOST: OffStudyReason.LOST_TO_FOLLOW_UP}


def check_follow_up(*, subject: Subject, kind: str, event_on: dt.date, cause_of_death: str,
                    cause_of_death_unknown: bool = False) -> None:
    # Survival follow-up is allowed even after consent was withdrawn (DESIGN: "except survival follow-up").
    if subject.status == SubjectStatus.OFF_STUDY and kind != FollowUp.Kind.DEATH:
        raise StateConflict("subject_closed", f"{subject.code} is off study; only survival status can be added.")
    if timeline_of(subject).day0 is None and kind != FollowUp.Kind.DEATH:
        raise StateConflict("not_infused", f"{subject.code} has not been infused.")
    check_follow_up_values(subject=subject, kind=kind, event_on=event_on, cause_of_death=cause_of_death,
                           cause_of_death_unknown=cause_of_death_unknown)
    if any(f.kind == FollowUp.Kind.DEATH for f in records_of(subject, "follow_ups")):  # as the subject page lists them
        raise StateConflict("subject_dead", f"{subject.code}'s death is already recorded.")


def check_follow_up_values(*, subject: Subject, kind: str, event_on: dt.date, cause_of_death: str,
                           cause_of_death_unknown: bool = False) -> None:
    """The record's own values (entry and corrections): a date not in the future and after consent, and
    for a death its cause, or an explicit "cause unknown" (a blank cause alone may be an omission)."""
    check_not_future(day=event_on, site=subject.site, field="event_on")
    check_cause_of_death(kind=kind, cause_of_death=cause_of_death, cause_of_death_unknown=cause_of_death_unknown)
    first = first_consent(subject)
    if first is None or event_on < first.consented_on:
        raise RuleViolation("before_consent", "Follow-up starts after consent.", field="event_on")


def check_cause_of_death(*, kind: str, cause_of_death: str, cause_of_death_unknown: bool) -> None:
    if cause_of_death_unknown and kind != FollowUp.Kind.DEATH:
        raise RuleViolation("cause_unknown_without_death", "Only a death has a cause of death.",
                            field="cause_of_death_unknown")
    if cause_of_death_unknown and cause_of_death:
        raise RuleViolation("cause_given_and_unknown", "Give the cause of death or mark it unknown, not both.",
                            field="cause_of_death")
    if kind == FollowUp.Kind.DEATH and not cause_of_death.strip() and not cause_of_death_unknown:
        raise RuleViolation("cause_required", "Give the cause of death. If it is not known, mark it unknown.",
                            field="cause_of_death")


def death_detail(*, cause_of_death: str, cause_of_death_unknown: bool, detail: str) -> str:
    return cause_of_death or ("Cause unknown" if cause_of_death_unknown else detail)


@transaction.atomic
def record_follow_up(*, subject: Subject, kind: str, event_on: dt.date, by: User,
                     cause_of_death: str = "", cause_of_death_unknown: bool = False, detail: str = "") -> FollowUp:
    """Allo-HSCT, last contact, death (takes the subject off study) or lost to follow-up (likewise)."""
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    check_follow_up(subject=subject, kind=kind, event_on=event_on, cause_of_death=cause_of_death,
                    cause_of_death_unknown=cause_of_death_unknown)
    follow_up = FollowUp(subject=subject, kind=kind, event_on=event_on, cause_of_death=cause_of_death,
                         cause_of_death_unknown=cause_of_death_unknown, detail=detail, recorded_by=by)
    follow_up.full_clean()
    follow_up.save()
    if kind in OFF_STUDY_FOR and subject.status != SubjectStatus.OFF_STUDY:
        why = death_detail(cause_of_death=cause_of_death, cause_of_death_unknown=cause_of_death_unknown,
                           detail=detail)
        subject.off_study_on, subject.off_study_reason, subject.off_study_detail = event_on, OFF_STUDY_FOR[kind], why
        move_subject(subject=subject, to=SubjectStatus.OFF_STUDY, on=event_on, by=by,
                     reason=f"{FollowUp.Kind(kind).label}. {why}".strip(". "))
    return follow_up
