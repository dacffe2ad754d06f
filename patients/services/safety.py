"""Adverse events, CRS/ICANS assessments graded by ASTCT 2019, and concomitant medications (DOMAIN §1-3).

CRS and ICANS grades are derived from the recorded components by ``patients.grading``; the event
carries the maximum grade of its assessments. A grade 5 event records the death and takes the
subject off study.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from config.errors import RuleViolation, StateConflict
from patients import grading
from patients.models import (
    AdverseEvent,
    ConcomitantMedication,
    CrsAssessment,
    CtcaeTerm,
    IcansAssessment,
    OffStudyReason,
    SaeReport,
    Subject,
    SubjectStatus,
)
from patients.selectors import first_consent
from patients.services.ctcae import check_ctcae_grade, check_event_coding, coded_values
from patients.services.enrolment import _lock, check_can_enter, check_consented, check_not_future, move_subject
from patients.timeline import local_date_of

Category = AdverseEvent.Category
SAE_CRITERIA = ("sae_death", "sae_life_threatening", "sae_hospitalisation", "sae_disability", "sae_congenital",
                "sae_important")


@dataclass(frozen=True)
class EventInput:
    """What a coordinator enters for an adverse event (the grade is omitted for CRS/ICANS)."""

    category: str
    onset_on: dt.date
    related_to_product: str
    related_to_lymphodepletion: str
    grade: int | None = None
    term: str = ""
    ctcae_term: CtcaeTerm | None = None
    system_organ_class: str = ""
    resolved_on: dt.date | None = None
    meddra_code: str = ""
    serious: bool = False
    site_aware_at: dt.datetime | None = None
    outcome: str = AdverseEvent.Outcome.NOT_RECOVERED
    action_taken: str = AdverseEvent.Action.NONE
    death_on: dt.date | None = None
    sae_death: bool = False
    sae_life_threatening: bool = False
    sae_hospitalisation: bool = False
    sae_disability: bool = False
    sae_congenital: bool = False
    sae_important: bool = False


def check_adverse_event(*, subject: Subject, data: EventInput) -> None:
    first = first_consent(subject)
    if subject.status in (SubjectStatus.SCREEN_FAILED,) or first is None:
        raise StateConflict("subject_not_ready", f"{subject.code} has no consent; adverse events are recorded "
                            "for consented subjects.")
    check_consented(subject=subject, on=max(data.onset_on, first.consented_on), field="onset_on")
    for name in ("onset_on", "resolved_on", "death_on"):
        check_not_future(day=getattr(data, name), site=subject.site, field=name)
    if data.resolved_on and data.resolved_on < data.onset_on:
        raise RuleViolation("resolved_before_onset", "Resolution cannot precede onset.", field="resolved_on")
    if data.category == Category.CTCAE and data.grade is None:
        raise RuleViolation("grade_required", "Give the CTCAE grade.", field="grade")
    if data.category != Category.CTCAE and data.grade is not None:
        raise RuleViolation("grade_is_derived", "CRS and ICANS grades are derived from their assessments.",
                            field="grade")
    if data.category == Category.CTCAE:
        check_event_coding(term=data.ctcae_term, reported_term=data.term, system_organ_class=data.system_organ_class)
        check_ctcae_grade(term=data.ctcae_term, grade=data.grade)
    elif not data.term.strip() and data.ctcae_term is None:  # a coded CRS/ICANS event takes its term's name
        raise RuleViolation("term_required", "Give the reported term or the CTCAE term.", field="term")
    criteria = [name for name in SAE_CRITERIA if getattr(data, name)]
    if data.serious and not criteria:
        raise RuleViolation("seriousness_criterion_required", "Tick at least one seriousness criterion.",
                            field="serious")
    if criteria and not data.serious:
        raise RuleViolation("criteria_without_sae", "Seriousness criteria are ticked but the event is not marked "
                            "serious.", field="serious")
    if data.serious and data.site_aware_at is None:
        raise RuleViolation("awareness_time_required", "Give when the site learned of the serious event.",
                            field="site_aware_at")
    if data.grade == 5 or data.outcome == AdverseEvent.Outcome.FATAL:
        _check_death(subject=subject, data=data)


def _check_death(*, subject: Subject, data: EventInput) -> None:
    if data.grade is not None and data.grade != 5:
        raise RuleViolation("fatal_needs_grade5", "A fatal outcome is grade 5.", field="grade")
    if data.death_on is None:
        raise RuleViolation("death_date_required", "A grade 5 event records the date of death.", field="death_on")
    if data.outcome != AdverseEvent.Outcome.FATAL:
        raise RuleViolation("grade5_needs_fatal_outcome", "A grade 5 event has a fatal outcome.", field="outcome")
    if not (data.serious and data.sae_death):
        raise RuleViolation("death_is_serious", "A fatal event is serious (results in death).", field="serious")
    if data.death_on < data.onset_on:
        raise RuleViolation("death_before_onset", "Death cannot precede onset.", field="death_on")


@transaction.atomic
def record_adverse_event(*, subject: Subject, data: EventInput, by: User) -> AdverseEvent:
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    check_adverse_event(subject=subject, data=data)
    scales: dict[str, str] = {Category.CTCAE: "CTCAE v5.0", Category.CRS: grading.ALGORITHM_CRS,
                              Category.ICANS: grading.ALGORITHM_ICANS}
    scale = scales[data.category]
    coded = coded_values(term=data.ctcae_term, reported_term=data.term, system_organ_class=data.system_organ_class,
                         meddra_code=data.meddra_code)
    data = replace(data, term=coded["term"], system_organ_class=coded["system_organ_class"],
                   meddra_code=coded["meddra_code"])
    event = AdverseEvent(subject=subject, grade_scale=scale, recorded_by=by, **data.__dict__)
    if data.category != Category.CTCAE:
        event.grade = 0
    event.report_due_at = sae_report_due_at(event)
    event.full_clean()
    event.save()
    if event.grade == 5:
        _record_death(subject=subject, event=event, by=by)
    return event


def sae_report_due_at(event: AdverseEvent) -> dt.datetime | None:
    """The expedited report of a serious event is due the trial's ``sae_report_hours`` (24 by default) after
    the site learned of it."""
    if not event.serious or event.site_aware_at is None:
        return None
    return event.site_aware_at + dt.timedelta(hours=event.subject.trial.sae_report_hours)


def _record_death(*, subject: Subject, event: AdverseEvent, by: User) -> None:
    if subject.status == SubjectStatus.OFF_STUDY:
        return
    assert event.death_on is not None
    subject.off_study_on, subject.off_study_reason = event.death_on, OffStudyReason.DEATH
    subject.off_study_detail = f"Grade 5 {event.term}"
    move_subject(subject=subject, to=SubjectStatus.OFF_STUDY, on=event.death_on, by=by,
                 reason=f"Death: grade 5 {event.term}")


# --- CRS and ICANS assessments -------------------------------------------------------------------


def _check_assessment(*, event: AdverseEvent, category: str, assessed_at: dt.datetime,
                      override_grade: int | None, override_reason: str) -> None:
    if event.category != category:
        raise RuleViolation("wrong_event_category", f"This is not a {category.upper()} event.", field="event")
    local = local_date_of(assessed_at, event.subject.site.tzinfo)
    check_not_future(day=local, site=event.subject.site, field="assessed_at")
    if local < event.onset_on:
        raise RuleViolation("assessment_before_onset", f"The event began on {event.onset_on:%d %b %Y}.",
                            field="assessed_at")
    if event.resolved_on and local > event.resolved_on:
        raise RuleViolation("assessment_after_resolution", f"The event resolved on {event.resolved_on:%d %b %Y}.",
                            field="assessed_at")
    if override_grade is not None and not override_reason.strip():
        raise RuleViolation("override_needs_reason", "An investigator grade override needs a reason.",
                            field="override_reason")


def check_crs_assessment(*, event: AdverseEvent, assessed_at: dt.datetime, components: dict[str, Any],
                         override_grade: int | None = None, override_reason: str = "") -> None:
    """A CRS assessment (ASTCT 2019): within the episode, its components gradable, an override with a reason."""
    _check_assessment(event=event, category=Category.CRS, assessed_at=assessed_at, override_grade=override_grade,
                      override_reason=override_reason)
    crs_inputs(components)


def check_icans_assessment(*, event: AdverseEvent, assessed_at: dt.datetime, components: dict[str, Any],
                           override_grade: int | None = None, override_reason: str = "") -> None:
    """An ICANS assessment (ASTCT 2019): as CRS, and the subject's age is known (ICE or CAPD depends on it)."""
    _check_assessment(event=event, category=Category.ICANS, assessed_at=assessed_at, override_grade=override_grade,
                      override_reason=override_reason)
    subject = event.subject
    if subject.age_at_consent is None:
        raise StateConflict("age_unknown", f"{subject.code} has no age at consent; ICANS grading depends on it.")
    icans_inputs(components, age_years=subject.age_at_consent)


def fever_masked(*, subject: Subject, before: dt.datetime) -> bool:
    """Antipyretic or anti-cytokine therapy given before this time masks fever (ASTCT)."""
    return subject.medications.filter(drug__in=ConcomitantMedication.FEVER_MASKING, given_at__lt=before).exists()


def crs_inputs(values: dict[str, Any]) -> grading.CrsInputs:
    try:
        return grading.CrsInputs(
            max_temp_c=values.get("max_temp_c"),
            fever_attributable_to_other_cause=values.get("fever_other_cause", False),
            prior_antipyretic_or_anticytokine=values.get("prior_antipyretic_or_anticytokine", False),
            hypotension_present=values.get("hypotension", False),
            hypotension_other_cause=values.get("hypotension_other_cause", False),
            vasopressors=tuple(grading.Vasopressor(v) for v in values.get("vasopressors", [])),
            o2_device=grading.O2Device(values.get("o2_device", "none")), o2_flow_lpm=values.get("o2_flow_lpm"),
            hypoxia_other_cause=values.get("hypoxia_other_cause", False),
            death_due_to_crs=values.get("death_due_to_crs", False),
        )
    except ValueError as err:
        raise RuleViolation("invalid_components", str(err)) from err


@transaction.atomic
def record_crs_assessment(*, event: AdverseEvent, assessed_at: dt.datetime, components: dict[str, Any],
                          by: User, override_grade: int | None = None,
                          override_reason: str = "") -> CrsAssessment:
    subject = _lock(event.subject)
    event = AdverseEvent.objects.select_for_update().get(pk=event.pk)
    event.subject = subject
    check_can_enter(user=by, subject=subject)
    check_crs_assessment(event=event, assessed_at=assessed_at, components=components, override_grade=override_grade,
                         override_reason=override_reason)
    components = {**components}
    components["prior_antipyretic_or_anticytokine"] = (components.get("prior_antipyretic_or_anticytokine", False)
                                                       or fever_masked(subject=subject, before=assessed_at))
    result = grading.crs_grade(crs_inputs(components))
    assessment = CrsAssessment(event=event, assessed_at=assessed_at, derived_grade=result.grade,
                               algorithm=result.algorithm, flags=list(result.flags), override_grade=override_grade,
                               override_reason=override_reason, recorded_by=by, **components)
    assessment.full_clean()
    assessment.save()
    _update_event_grade(event=event, by=by)
    return assessment


def icans_inputs(values: dict[str, Any], *, age_years: int) -> grading.IcansInputs:
    names = [*grading.ICE_ITEMS, "ice_unable_awake_aphasic", "capd_total", "capd_unable", "developmental_delay",
             "consciousness_other_cause", "death_due_to_icans"]
    try:
        return grading.IcansInputs(
            age_years=age_years, **{n: values[n] for n in names if n in values},
            consciousness=grading.Consciousness(values.get("consciousness", "alert")),
            seizure=grading.Seizure(values.get("seizure", "none")),
            motor=grading.MotorFinding(values.get("motor", "none")),
            cerebral_oedema=grading.CerebralOedema(values.get("cerebral_oedema", "none")),
        )
    except (ValueError, TypeError) as err:
        raise RuleViolation("invalid_components", str(err)) from err


@transaction.atomic
def record_icans_assessment(*, event: AdverseEvent, assessed_at: dt.datetime, components: dict[str, Any],
                            by: User, override_grade: int | None = None,
                            override_reason: str = "") -> IcansAssessment:
    subject = _lock(event.subject)
    event = AdverseEvent.objects.select_for_update().get(pk=event.pk)
    event.subject = subject
    check_can_enter(user=by, subject=subject)
    check_icans_assessment(event=event, assessed_at=assessed_at, components=components,
                           override_grade=override_grade, override_reason=override_reason)
    assert subject.age_at_consent is not None  # check_icans_assessment refuses an unknown age
    inputs = icans_inputs(components, age_years=subject.age_at_consent)
    result = grading.icans_grade(inputs, capd_age_cutoff_years=subject.trial.capd_age_cutoff_years)
    assessment = IcansAssessment(event=event, assessed_at=assessed_at, derived_grade=result.grade,
                                 algorithm=result.algorithm, flags=list(result.flags), ice_score=inputs.ice_total,
                                 override_grade=override_grade, override_reason=override_reason, recorded_by=by,
                                 **components)
    assessment.full_clean()
    assessment.save()
    _update_event_grade(event=event, by=by)
    return assessment


def _update_event_grade(*, event: AdverseEvent, by: User) -> None:
    """The episode's grade is the maximum over its assessments (override where given)."""
    assessments = event.crsassessments.all() if event.category == Category.CRS else event.icansassessments.all()
    grade = grading.episode_max_grade(a.grade for a in assessments)
    if grade == 5 and event.grade != 5:
        last = max(assessments, key=lambda a: a.assessed_at)
        event.death_on = event.death_on or local_date_of(last.assessed_at, event.subject.site.tzinfo)
        event.outcome, event.serious, event.sae_death = AdverseEvent.Outcome.FATAL, True, True
        event.site_aware_at = event.site_aware_at or last.assessed_at
        event.report_due_at = sae_report_due_at(event)
    event.grade = grade
    event.full_clean()
    event.save()
    if grade == 5:
        _record_death(subject=event.subject, event=event, by=by)


# --- concomitant medications ---------------------------------------------------------------------


def check_medication(*, subject: Subject, drug: str, drug_name: str, given_at: dt.datetime,
                     adverse_event: AdverseEvent | None = None) -> None:
    """Given after consent, not in the future (site's date), named when "other", and treating an event of the
    same subject (entry and corrections)."""
    local = local_date_of(given_at, subject.site.tzinfo)
    check_not_future(day=local, site=subject.site, field="given_at")
    check_consented(subject=subject, on=local, field="given_at")
    if drug == ConcomitantMedication.Drug.OTHER and not drug_name.strip():
        raise RuleViolation("drug_name_required", "Name the medication.", field="drug_name")
    if adverse_event is not None and adverse_event.subject_id != subject.pk:
        raise RuleViolation("event_not_subjects", "The adverse event belongs to another subject.",
                            field="adverse_event")


@transaction.atomic
def record_medication(*, subject: Subject, drug: str, dose: Decimal, dose_unit: str, route: str,
                      given_at: dt.datetime, by: User, drug_name: str = "", indication: str = "",
                      adverse_event: AdverseEvent | None = None) -> ConcomitantMedication:
    """A treatment given (e.g. tocilizumab 8 mg/kg IV for CRS), with dose, route and time."""
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    check_medication(subject=subject, drug=drug, drug_name=drug_name, given_at=given_at, adverse_event=adverse_event)
    medication = ConcomitantMedication(subject=subject, drug=drug, drug_name=drug_name, dose=dose,
                                       dose_unit=dose_unit, route=route, given_at=given_at, indication=indication,
                                       adverse_event=adverse_event, recorded_by=by)
    medication.full_clean()
    medication.save()
    return medication




# --- expedited reporting of serious adverse events --------------------------------------------------


def check_sae_report(*, event: AdverseEvent, kind: str, recipient: str, sent_at: dt.datetime) -> None:
    """An SAE report: of a serious event, sent after the site learned of it and not in the future; one initial
    report per recipient, and a follow-up only after the initial one (protocol safety reporting, ICH E2A)."""
    if not event.serious:
        raise StateConflict("event_not_serious", "Only a serious adverse event is reported as an SAE.")
    site = event.subject.site
    check_not_future(day=local_date_of(sent_at, site.tzinfo), site=site, field="sent_at")
    if sent_at > timezone.now():
        raise RuleViolation("date_in_future", "The report cannot be sent in the future.", field="sent_at")
    if event.site_aware_at is not None and sent_at < event.site_aware_at:
        raise RuleViolation("report_before_awareness", "The report cannot precede the site's awareness of the "
                            f"event ({site.local(event.site_aware_at):%d %b %Y %H:%M}).", field="sent_at")
    initial = event.sae_reports.filter(kind=SaeReport.Kind.INITIAL, recipient=recipient).first()
    if kind == SaeReport.Kind.INITIAL and initial is not None:
        raise StateConflict("initial_report_exists", f"The initial report to the {recipient} was recorded "
                            f"({site.local(initial.sent_at):%d %b %Y %H:%M}); record a follow-up.", field="kind")
    if kind == SaeReport.Kind.FOLLOW_UP and (initial is None or sent_at < initial.sent_at):
        raise RuleViolation("initial_report_missing", f"A follow-up comes after the initial report to the "
                            f"{recipient}.", field="kind")


@transaction.atomic
def record_sae_report(*, event: AdverseEvent, kind: str, recipient: str, sent_at: dt.datetime, by: User,
                      reference: str = "") -> SaeReport:
    """Record that an SAE report was sent (initial or follow-up, to the sponsor, ethics or regulator)."""
    subject = _lock(event.subject)
    event = AdverseEvent.objects.select_for_update(of=("self",)).get(pk=event.pk)
    event.subject = subject
    check_can_enter(user=by, subject=subject)
    check_sae_report(event=event, kind=kind, recipient=recipient, sent_at=sent_at)
    report = SaeReport(event=event, kind=kind, recipient=recipient, sent_at=sent_at, reference=reference,
                       recorded_by=by)
    report.full_clean()
    report.save()
    return report
