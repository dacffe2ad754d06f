"""Screening, consent, eligibility, enrolment and leaving the study (protocol §5.1, DESIGN "Subject states").

Each transition of the subject state machine is one service here. ``check_*`` functions read only
and raise a DomainError; the write services lock the subject row, call the check and write the
record and the transition log in one transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import pghistory
from django.contrib.auth.models import AbstractBaseUser, User
from django.db import transaction
from django.utils import timezone

from config.errors import PermissionRefused, RuleViolation, StateConflict
from locking.services import check_writable
from patients.models import (
    Consent,
    EligibilityAnswer,
    EligibilityAssessment,
    OffStudyReason,
    Subject,
    SubjectStatus,
    SubjectTransition,
)
from patients.selectors import consent_withdrawn, first_consent, latest_confirmed_eligibility, site_today
from trials.access import access_of
from trials.models import Cohort, EligibilityCriterion, Membership, Site, Trial, TrialSite

S = SubjectStatus

# The subject state machine (DESIGN.md). OFF_STUDY is reachable from any state after consent.
TRANSITIONS: dict[str, frozenset[str]] = {
    S.SCREENING: frozenset({S.ELIGIBLE, S.SCREEN_FAILED, S.OFF_STUDY}),
    S.ELIGIBLE: frozenset({S.ENROLLED, S.SCREEN_FAILED, S.OFF_STUDY}),
    S.ENROLLED: frozenset({S.APHERESED, S.OFF_STUDY}),
    S.APHERESED: frozenset({S.LYMPHODEPLETED, S.OFF_STUDY}),
    S.LYMPHODEPLETED: frozenset({S.INFUSED, S.OFF_STUDY}),
    S.INFUSED: frozenset({S.FOLLOW_UP, S.OFF_STUDY}),
    S.FOLLOW_UP: frozenset({S.LYMPHODEPLETED, S.OFF_STUDY}),  # re-infusion course, where allowed
    S.SCREEN_FAILED: frozenset(),
    S.OFF_STUDY: frozenset(),
}


# --- shared checks -------------------------------------------------------------------------------


def check_not_future(*, day: dt.date | None, site: Site, field: str) -> None:
    if day is not None and day > site_today(site):
        raise RuleViolation("date_in_future", f"{day:%d %b %Y} is in the future at site {site.code}.", field=field)


def check_can_enter(*, user: AbstractBaseUser, subject: Subject) -> None:
    """Only coordinators and investigators of the subject's site enter its data."""
    if not access_of(user).can_enter(trial_id=subject.trial_id, site_id=subject.site_id):
        raise PermissionRefused("not_permitted", "Your role does not allow data entry for this subject.")
    # A frozen or locked subject, site or trial refuses every clinical write (409 naming the lock).
    check_writable(trial_id=subject.trial_id, site_id=subject.site_id, subject_id=subject.pk)


def check_consented(*, subject: Subject, on: dt.date, field: str, code: str = "no_consent") -> None:
    """No study procedure before signed consent, and none at all after consent was withdrawn."""
    withdrawn = consent_withdrawn(subject)
    if withdrawn is not None:
        raise StateConflict(
            "consent_withdrawn",
            f"Consent was withdrawn on {withdrawn.withdrawn_on:%d %b %Y}; no further procedures may be recorded.",
        )
    consent = first_consent(subject)
    if consent is None or consent.consented_on > on:
        raise RuleViolation(code, f"{subject.code} has no signed consent on or before {on:%d %b %Y}.", field=field)


def check_transition(*, subject: Subject, to: str) -> None:
    if to not in TRANSITIONS[subject.status]:
        raise StateConflict(
            "transition_not_allowed",
            f"{subject.code} is {subject.get_status_display().lower()}; it cannot become "
            f"{SubjectStatus(to).label.lower()}.",
        )


def _lock(subject: Subject) -> Subject:
    return Subject.objects.select_for_update(of=("self",)).select_related("trial", "site").get(pk=subject.pk)


def move_subject(*, subject: Subject, to: str, on: dt.date, by: User, reason: str = "") -> None:
    """Change the subject's status and log the transition. Callers hold the subject lock."""
    check_transition(subject=subject, to=to)
    SubjectTransition.objects.create(
        subject=subject, from_status=subject.status, to_status=to, effective_on=on, reason=reason, recorded_by=by
    )
    subject.status = to
    subject.save(update_fields=["status", "enrolled_on", "off_study_on", "off_study_reason",
                                "off_study_detail", "cohort", "updated_at"])


# --- screening ------------------------------------------------------------------------------------


def check_screening_permission(*, user: AbstractBaseUser, trial: Trial, site: Site) -> None:
    if not access_of(user).can_enter(trial_id=trial.pk, site_id=site.pk):
        raise PermissionRefused("not_permitted", f"Your role does not allow screening at {site.code} in "
                                f"{trial.code}.", field="site")
    check_writable(trial_id=trial.pk, site_id=site.pk)  # a frozen or locked trial or site screens no one


def check_screening(*, trial: Trial, site: Site, screened_on: dt.date) -> None:
    """A site screens only while active for the trial, and only while the trial recruits."""
    trial_site = TrialSite.objects.filter(trial=trial, site=site).first()
    if trial_site is None or trial_site.status != TrialSite.Status.ACTIVE:
        raise RuleViolation("site_not_active", f"Site {site.code} is not active for {trial.code}.", field="site")
    if trial_site.activated_on and screened_on < trial_site.activated_on:
        raise RuleViolation(
            "before_site_activation",
            f"Site {site.code} was activated for {trial.code} on {trial_site.activated_on:%d %b %Y}.",
            field="screened_on",
        )
    if trial.status != Trial.Status.RECRUITING:
        raise StateConflict("trial_not_recruiting", f"{trial.code} is {trial.get_status_display().lower()}.")
    check_not_future(day=screened_on, site=site, field="screened_on")


@transaction.atomic
def screen_subject(*, trial: Trial, site: Site, screened_on: dt.date, by: User,
                   **characteristics: object) -> Subject:
    """Register a subject in the screening log under a new pseudonymous code (e.g. S01-0007)."""
    check_screening_permission(user=by, trial=trial, site=site)
    check_screening(trial=trial, site=site, screened_on=screened_on)
    if unknown := set(characteristics) - (AMENDABLE_FIELDS - {"age_at_consent"}):
        raise RuleViolation("not_a_characteristic", f"{', '.join(sorted(unknown))} cannot be set at screening.")
    # The lock on the trial-site row serialises code numbering (and screening numbers) between concurrent
    # screenings and corrections.
    trial_site = TrialSite.objects.select_for_update().get(trial=trial, site=site)
    check_screening_number(trial=trial, site=site, screening_number=str(characteristics.get("screening_number", "")))
    trial_site.last_subject_number += 1
    trial_site.save(update_fields=["last_subject_number", "updated_at"])
    subject = Subject(trial=trial, site=site, screened_on=screened_on,
                      code=f"{site.code}-{trial_site.last_subject_number:04d}", **characteristics)
    subject.full_clean()
    subject.save()
    SubjectTransition.objects.create(subject=subject, from_status="", to_status=S.SCREENING,
                                     effective_on=screened_on, recorded_by=by)
    return subject


def check_screening_number(*, trial: Trial, site: Site, screening_number: str, subject: Subject | None = None) -> None:
    """A site's own screening number names one subject of the trial at that site (optional)."""
    if not screening_number:
        return
    taken = Subject.objects.filter(trial=trial, site=site, screening_number=screening_number)
    if subject is not None:
        taken = taken.exclude(pk=subject.pk)
    if taken.exists():
        raise StateConflict("duplicate_screening_number", f"Screening number {screening_number} is already used "
                            f"at {site.code} in {trial.code}.", field="screening_number")


# --- consent -------------------------------------------------------------------------------------


def check_consent(*, subject: Subject, consented_on: dt.date, age_at_consent: int | None = None) -> None:
    if subject.status in (S.SCREEN_FAILED, S.OFF_STUDY):
        raise StateConflict("subject_closed", f"{subject.code} is {subject.get_status_display().lower()}.")
    withdrawn = consent_withdrawn(subject)
    if withdrawn is not None:
        raise StateConflict("consent_withdrawn", f"Consent was withdrawn on {withdrawn.withdrawn_on:%d %b %Y}.")
    check_not_future(day=consented_on, site=subject.site, field="consented_on")
    if consented_on < subject.screened_on:
        raise RuleViolation("consent_before_screening",
                            f"Consent cannot predate screening ({subject.screened_on:%d %b %Y}).",
                            field="consented_on")
    if age_at_consent is None and subject.age_at_consent is None:
        raise RuleViolation("age_required", "Record the subject's age at consent.", field="age_at_consent")


@transaction.atomic
def record_consent(*, subject: Subject, version: str, consented_on: dt.date, by: User,
                   age_at_consent: int | None = None) -> Consent:
    """Record signed informed consent (a later row re-consents to a new form version)."""
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    check_consent(subject=subject, consented_on=consented_on, age_at_consent=age_at_consent)
    consent = Consent(subject=subject, version=version, consented_on=consented_on, recorded_by=by)
    consent.full_clean()
    consent.save()
    if age_at_consent is not None and subject.age_at_consent is None:
        subject.age_at_consent = age_at_consent
        subject.full_clean()
        subject.save(update_fields=["age_at_consent", "updated_at"])
    return consent


def check_withdrawal(*, subject: Subject, withdrawn_on: dt.date, reason: str) -> None:
    if subject.status in (S.SCREEN_FAILED, S.OFF_STUDY):
        raise StateConflict("subject_closed", f"{subject.code} is {subject.get_status_display().lower()}.")
    consent = first_consent(subject)
    if consent is None:
        raise StateConflict("no_consent", f"{subject.code} has no consent to withdraw.")
    if not reason.strip():
        raise RuleViolation("reason_required", "Give the reason for withdrawal.", field="reason")
    check_not_future(day=withdrawn_on, site=subject.site, field="withdrawn_on")
    # Every consent row is marked withdrawn, so the date may not predate the newest one (re-consent).
    latest = subject.consents.order_by("-consented_on", "-pk").first() or consent
    if withdrawn_on < latest.consented_on:
        raise RuleViolation("withdrawal_before_consent",
                            f"Consent was given on {latest.consented_on:%d %b %Y}.", field="withdrawn_on")


@transaction.atomic
def withdraw_consent(*, subject: Subject, withdrawn_on: dt.date, reason: str, by: User) -> Subject:
    """Withdrawal of consent takes the subject off study; nothing may be recorded after it."""
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    check_withdrawal(subject=subject, withdrawn_on=withdrawn_on, reason=reason)
    subject.consents.filter(withdrawn_on__isnull=True).update(
        withdrawn_on=withdrawn_on, withdrawal_reason=reason, updated_at=timezone.now()
    )
    subject.off_study_on, subject.off_study_reason = withdrawn_on, OffStudyReason.CONSENT_WITHDRAWN
    subject.off_study_detail = reason
    move_subject(subject=subject, to=S.OFF_STUDY, on=withdrawn_on, by=by, reason=reason)
    return subject


# --- eligibility ---------------------------------------------------------------------------------


def check_eligibility_assessment(*, subject: Subject, assessed_on: dt.date,
                                 answers: Mapping[EligibilityCriterion, bool]) -> None:
    if subject.status != S.SCREENING:
        raise StateConflict("not_screening", f"{subject.code} is {subject.get_status_display().lower()}; "
                            "eligibility is assessed during screening.")
    check_not_future(day=assessed_on, site=subject.site, field="assessed_on")
    check_consented(subject=subject, on=assessed_on, field="assessed_on", code="eligibility_before_consent")
    expected = set(EligibilityCriterion.objects.filter(trial_id=subject.trial_id, active=True))
    given = set(answers)
    if given - expected:
        raise RuleViolation("unknown_criterion", "An answer refers to a criterion that is not an active "
                            f"criterion of {subject.trial.code}.", field="answers")
    if missing := expected - given:
        names = ", ".join(sorted(str(c).split(":")[0] for c in missing))
        raise RuleViolation("criteria_incomplete", f"Answer every criterion; missing: {names}.", field="answers")


@transaction.atomic
def assess_eligibility(*, subject: Subject, assessed_on: dt.date, answers: Mapping[EligibilityCriterion, bool],
                       by: User) -> EligibilityAssessment:
    """Record the checklist. The subject becomes eligible only once an investigator confirms it."""
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    check_eligibility_assessment(subject=subject, assessed_on=assessed_on, answers=answers)
    eligible = all(met if c.kind == EligibilityCriterion.Kind.INCLUSION else not met for c, met in answers.items())
    assessment = EligibilityAssessment.objects.create(
        subject=subject, assessed_on=assessed_on, assessed_by=by, eligible=eligible
    )
    EligibilityAnswer.objects.bulk_create(
        EligibilityAnswer(assessment=assessment, criterion=c, met=met) for c, met in answers.items()
    )
    return assessment


def check_confirmation(*, assessment: EligibilityAssessment, by: User) -> None:
    subject = assessment.subject
    if not access_of(by).has_role(trial_id=subject.trial_id, site_id=subject.site_id,
                                  role=Membership.Role.INVESTIGATOR):
        raise PermissionRefused("investigator_required",
                                f"Only an investigator of site {subject.site.code} may confirm eligibility.")
    check_writable(trial_id=subject.trial_id, site_id=subject.site_id, subject_id=subject.pk)
    if assessment.confirmed_at is not None:
        raise StateConflict("already_confirmed", "This assessment was already confirmed.")
    if subject.status != S.SCREENING:
        raise StateConflict("not_screening", f"{subject.code} is {subject.get_status_display().lower()}.")
    check_consented(subject=subject, on=assessment.assessed_on, field="assessed_on")


@transaction.atomic
def confirm_eligibility(*, assessment: EligibilityAssessment, by: User) -> EligibilityAssessment:
    """The investigator confirms the checklist; an eligible result makes the subject eligible."""
    subject = _lock(assessment.subject)
    assessment = EligibilityAssessment.objects.select_for_update().get(pk=assessment.pk)
    assessment.subject = subject
    check_confirmation(assessment=assessment, by=by)
    assessment.confirmed_by, assessment.confirmed_at = by, timezone.now()
    assessment.save(update_fields=["confirmed_by", "confirmed_at", "updated_at"])
    if assessment.eligible:
        move_subject(subject=subject, to=S.ELIGIBLE, on=assessment.assessed_on, by=by,
                     reason="Eligibility confirmed by investigator")
    return assessment


# --- enrolment, screen failure, off study --------------------------------------------------------


def check_enrolment(*, subject: Subject, cohort: Cohort | None, enrolled_on: dt.date) -> None:
    """Enrolment needs investigator-confirmed eligibility, valid consent and a cohort of the trial."""
    if subject.status == S.SCREENING:
        raise StateConflict("eligibility_not_confirmed",
                            f"{subject.code} cannot be enrolled: eligibility has not been confirmed by an "
                            "investigator.")
    check_transition(subject=subject, to=S.ENROLLED)
    confirmed = latest_confirmed_eligibility(subject)
    if confirmed is None or not confirmed.eligible:
        raise StateConflict("eligibility_not_confirmed",
                            f"{subject.code} has no investigator-confirmed eligible assessment.")
    if cohort is None or cohort.trial_id != subject.trial_id:
        raise RuleViolation("cohort_not_in_trial", f"Choose a cohort of {subject.trial.code}.", field="cohort")
    check_not_future(day=enrolled_on, site=subject.site, field="enrolled_on")
    if enrolled_on < confirmed.assessed_on:
        raise RuleViolation("enrolment_before_eligibility",
                            f"Eligibility was assessed on {confirmed.assessed_on:%d %b %Y}.", field="enrolled_on")
    check_consented(subject=subject, on=enrolled_on, field="enrolled_on")


@transaction.atomic
def enrol_subject(*, subject: Subject, cohort: Cohort | None, enrolled_on: dt.date,
                  by: User) -> Subject:
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    check_enrolment(subject=subject, cohort=cohort, enrolled_on=enrolled_on)
    subject.cohort, subject.enrolled_on = cohort, enrolled_on
    move_subject(subject=subject, to=S.ENROLLED, on=enrolled_on, by=by, reason=f"Enrolled in {cohort}")
    return subject


def check_screen_failure(*, subject: Subject, failed_on: dt.date, reason: str) -> None:
    check_transition(subject=subject, to=S.SCREEN_FAILED)
    if not reason.strip():
        raise RuleViolation("reason_required", "A screen failure needs a reason.", field="reason")
    check_not_future(day=failed_on, site=subject.site, field="failed_on")
    if failed_on < subject.screened_on:
        raise RuleViolation("before_screening", f"Screening started on {subject.screened_on:%d %b %Y}.",
                            field="failed_on")


@transaction.atomic
def record_screen_failure(*, subject: Subject, failed_on: dt.date, reason: str, by: User) -> Subject:
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    check_screen_failure(subject=subject, failed_on=failed_on, reason=reason)
    move_subject(subject=subject, to=S.SCREEN_FAILED, on=failed_on, by=by, reason=reason)
    return subject


def check_off_study(*, subject: Subject, off_on: dt.date | None, reason: str, detail: str) -> None:
    if subject.status in (S.OFF_STUDY, S.SCREEN_FAILED):
        check_transition(subject=subject, to=S.OFF_STUDY)
    consent = first_consent(subject)
    if consent is None:
        raise StateConflict("not_consented",
                            f"{subject.code} never consented; record a screen failure instead.")
    if off_on is None:
        raise RuleViolation("date_required", "Give the date the subject went off study.", field="off_on")
    if reason not in OffStudyReason.values:
        raise RuleViolation("reason_required", "Choose the reason the subject went off study.", field="reason")
    if reason == OffStudyReason.CONSENT_WITHDRAWN:
        raise RuleViolation("use_withdrawal", "Record a withdrawal of consent instead.", field="reason")
    if reason == OffStudyReason.OTHER and not detail.strip():
        raise RuleViolation("detail_required", "Describe the reason.", field="detail")
    check_not_future(day=off_on, site=subject.site, field="off_on")
    if off_on < consent.consented_on:
        raise RuleViolation("before_consent", f"Consent was given on {consent.consented_on:%d %b %Y}.",
                            field="off_on")
    check_transition(subject=subject, to=S.OFF_STUDY)


@transaction.atomic
def take_off_study(*, subject: Subject, off_on: dt.date | None, reason: str, by: User,
                   detail: str = "") -> Subject:
    """Off study from any state after consent, with a date and a reason (death, lost to follow-up...)."""
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    check_off_study(subject=subject, off_on=off_on, reason=reason, detail=detail)
    assert off_on is not None
    subject.off_study_on, subject.off_study_reason, subject.off_study_detail = off_on, reason, detail
    label = OffStudyReason(reason).label
    move_subject(subject=subject, to=S.OFF_STUDY, on=off_on, by=by, reason=f"{label}. {detail}".strip(". "))
    return subject


def offered_actions(subject: Subject) -> list[str]:
    """The subject actions that the state machine allows now, for the admin to offer."""
    if subject.status in (S.SCREEN_FAILED, S.OFF_STUDY):
        return []
    consented = first_consent(subject) is not None
    actions = ["consent"]
    if consented:
        actions.append("measurement")
    if consented and subject.status == S.SCREENING:
        actions.append("eligibility")
    if subject.status == S.ELIGIBLE:
        actions.append("enrol")
    if subject.status in (S.SCREENING, S.ELIGIBLE):
        actions.append("screen-failure")
    if consented:
        actions += ["withdraw-consent", "off-study"]
    return actions


AMENDABLE_FIELDS = frozenset({
    "screening_number", "sex", "diagnosis", "fusion_genes", "mutations", "marrow_blasts_pct", "extramedullary_disease",
    "cns_status", "prior_allo_hsct", "prior_cart", "prior_cart_target", "prior_cart_scfv_origin", "prior_lines",
    "age_at_consent",
})


def check_amendment(*, changed: Mapping[str, object], reason: str, subject: Subject | None = None) -> None:
    if unknown := set(changed) - AMENDABLE_FIELDS:
        raise RuleViolation("not_amendable", f"{', '.join(sorted(unknown))} cannot be changed here.")
    if changed and not reason.strip():
        raise RuleViolation("reason_required", "Give a reason for the change.", field="reason_for_change")
    if subject is not None and "screening_number" in changed:
        check_screening_number(trial=subject.trial, site=subject.site, subject=subject,
                               screening_number=str(changed["screening_number"]))


@transaction.atomic
def amend_subject(*, subject: Subject, changes: Mapping[str, object], reason: str, by: User) -> Subject:
    """Correct the subject's characteristics; a saved value changes only with a reason (ALCOA+)."""
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    changed = {name: value for name, value in changes.items() if getattr(subject, name) != value}
    if "screening_number" in changed:  # serialised with screenings at the site (see screen_subject)
        TrialSite.objects.select_for_update().filter(trial_id=subject.trial_id, site_id=subject.site_id).first()
    check_amendment(changed=changed, reason=reason, subject=subject)
    if not changed:
        return subject
    for name, value in changed.items():
        setattr(subject, name, value)
    subject.full_clean()
    with pghistory.context(reason=reason):
        subject.save(update_fields=[*changed, "updated_at"])
    return subject
