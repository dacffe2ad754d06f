"""Every rule of screening, consent, eligibility, enrolment and leaving the study, through the services.

A refused write must raise the rule's DomainError (code and field) and write nothing: ``refused``
compares every row of the enrolment tables (and the trial-site numbering) before and after.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from config.errors import DomainError, PermissionRefused, RuleViolation, StateConflict
from patients.models import (
    BodyMeasurement,
    Consent,
    EligibilityAnswer,
    EligibilityAssessment,
    OffStudyReason,
    Subject,
    SubjectEvent,
    SubjectStatus,
    SubjectTransition,
)
from patients.services import enrolment
from patients.services.measurements import record_body_measurement
from tests.factories import (
    SUBJECT_DEFAULTS,
    CriterionFactory,
    MembershipFactory,
    SiteFactory,
    TrialSiteFactory,
    UserFactory,
    all_met,
    assessed,
    build_trial,
    consented,
    days_ago,
    eligible_subject,
    enrolled_subject,
    screened,
)
from trials.models import Membership, Site, Trial, TrialSite

pytestmark = pytest.mark.django_db

S = SubjectStatus
TRACKED = (Subject, Consent, EligibilityAssessment, EligibilityAnswer, SubjectTransition, BodyMeasurement, TrialSite)


# --- helpers ---------------------------------------------------------------------------------------



def table_rows() -> dict[str, list[dict[str, Any]]]:
    return {model.__name__: list(model.objects.order_by("pk").values()) for model in TRACKED}


@contextmanager
def refused(error_class: type[DomainError], code: str, *, field: str | None = None,
            subject: Subject | None = None) -> Iterator[Any]:
    """The block must raise ``error_class`` with ``code`` and ``field``, and leave every row as it was."""
    before = table_rows()
    status = Subject.objects.get(pk=subject.pk).status if subject is not None else None
    with pytest.raises(DomainError) as err:
        yield err
    assert type(err.value) is error_class, err.value
    assert (err.value.code, err.value.field) == (code, field), err.value.message
    after = table_rows()
    assert {k: len(v) for k, v in after.items()} == {k: len(v) for k, v in before.items()}
    assert after == before
    if subject is not None:
        subject.refresh_from_db()
        assert subject.status == status


@contextmanager
def invalid_and_nothing_written() -> Iterator[None]:
    """A model validation error (full_clean inside the service) rolls back the whole service."""
    before = table_rows()
    with pytest.raises(ValidationError):
        yield
    assert table_rows() == before


def local_today(site: Site) -> dt.date:
    """Today at the site, computed here independently of the service's selector."""
    return timezone.now().astimezone(ZoneInfo(site.time_zone)).date()


def tomorrow_at(site: Site) -> dt.date:
    return local_today(site) + dt.timedelta(days=1)


def at_a(world: Any) -> dict[str, Any]:
    return {"trial": world.trial, "site": world.site_a, "coordinator": world.coordinator}


def screened_a(world: Any, **kwargs: Any) -> Subject:
    return screened(**at_a(world), **kwargs)


def consented_a(world: Any, **kwargs: Any) -> Subject:
    return consented(**at_a(world), **kwargs)


def assessed_a(world: Any, **kwargs: Any) -> tuple[Subject, EligibilityAssessment]:
    return assessed(**at_a(world), **kwargs)


def eligible_a(world: Any) -> Subject:
    return eligible_subject(investigator=world.investigator, **at_a(world))


def enrolled_a(world: Any) -> Subject:
    return enrolled_subject(investigator=world.investigator, **at_a(world))


def screen_failed_a(world: Any) -> Subject:
    return enrolment.record_screen_failure(subject=screened_a(world), failed_on=days_ago(28),
                                           reason="Marrow blasts below 5%", by=world.coordinator)


def off_study_a(world: Any) -> Subject:
    return enrolment.take_off_study(subject=enrolled_a(world), off_on=days_ago(5),
                                    reason=OffStudyReason.DEATH, by=world.coordinator)


def withdrawn_a(world: Any, subject: Subject | None = None) -> Subject:
    return enrolment.withdraw_consent(subject=subject or consented_a(world), withdrawn_on=days_ago(10),
                                      reason="No longer wishes to take part", by=world.coordinator)


def adult(trial: Trial) -> Any:
    return trial.cohorts.get(code="ADULT")


def entry_user(trial: Trial, *sites: Site) -> Any:
    """A coordinator of ``trial`` at ``sites`` (a fresh user: memberships are cached on the user object)."""
    user = UserFactory()
    for site in sites:
        MembershipFactory(user=user, trial=trial, site=site, role=Membership.Role.COORDINATOR)
    return user


# --- who may write ---------------------------------------------------------------------------------
# Each entry builds a site-A subject in the state the write needs and returns (subject, write(user)).

Write = Callable[[Any], object]


def _screen(world: Any) -> tuple[Subject | None, Write]:
    return None, lambda by: enrolment.screen_subject(trial=world.trial, site=world.site_a, screened_on=days_ago(30),
                                                     by=by, **SUBJECT_DEFAULTS)


def _consent(world: Any) -> tuple[Subject | None, Write]:
    s = screened_a(world)
    return s, lambda by: enrolment.record_consent(subject=s, version="v1.0", consented_on=days_ago(29),
                                                  age_at_consent=40, by=by)


def _withdraw(world: Any) -> tuple[Subject | None, Write]:
    s = consented_a(world)
    return s, lambda by: enrolment.withdraw_consent(subject=s, withdrawn_on=days_ago(5), reason="Moved", by=by)


def _assess(world: Any) -> tuple[Subject | None, Write]:
    s = consented_a(world)
    return s, lambda by: enrolment.assess_eligibility(subject=s, assessed_on=days_ago(25),
                                                      answers=all_met(world.trial), by=by)


def _enrol(world: Any) -> tuple[Subject | None, Write]:
    s = eligible_a(world)
    return s, lambda by: enrolment.enrol_subject(subject=s, cohort=adult(world.trial), enrolled_on=days_ago(20),
                                                 by=by)


def _screen_failure(world: Any) -> tuple[Subject | None, Write]:
    s = screened_a(world)
    return s, lambda by: enrolment.record_screen_failure(subject=s, failed_on=days_ago(5), reason="Blasts < 5%",
                                                         by=by)


def _off_study(world: Any) -> tuple[Subject | None, Write]:
    s = enrolled_a(world)
    return s, lambda by: enrolment.take_off_study(subject=s, off_on=days_ago(5),
                                                  reason=OffStudyReason.LOST_TO_FOLLOW_UP, by=by)


def _amend(world: Any) -> tuple[Subject | None, Write]:
    s = screened_a(world)
    return s, lambda by: enrolment.amend_subject(subject=s, changes={"prior_lines": 3}, reason="Source data",
                                                 by=by)


def _measure(world: Any) -> tuple[Subject | None, Write]:
    s = consented_a(world)
    return s, lambda by: record_body_measurement(subject=s, measured_on=days_ago(28), height_cm=Decimal("170.0"),
                                                 weight_kg=Decimal("65.0"), by=by)


WRITES = {
    "screen": _screen, "consent": _consent, "withdraw-consent": _withdraw, "eligibility": _assess,
    "enrol": _enrol, "screen-failure": _screen_failure, "off-study": _off_study, "amend": _amend,
    "measurement": _measure,
}


@pytest.mark.parametrize("action", WRITES)
@pytest.mark.parametrize("who", ["coordinator_b", "investigator_b", "monitor", "data_manager"])
def test_only_entry_roles_of_the_subjects_site_may_write(world, action, who):
    subject, write = WRITES[action](world)
    field = "site" if action == "screen" else None  # screening names the site the user chose
    with refused(PermissionRefused, "not_permitted", field=field, subject=subject):
        write(getattr(world, who))


@pytest.mark.parametrize("action", WRITES)
@pytest.mark.parametrize("who", ["coordinator", "investigator"])
def test_coordinators_and_investigators_of_the_site_may_write(world, action, who):
    _subject, write = WRITES[action](world)
    assert write(getattr(world, who)) is not None


# --- screening -------------------------------------------------------------------------------------


def test_screening_numbers_codes_per_trial_and_site(world):
    a1, a2 = screened_a(world), screened_a(world)
    b1 = screened(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b)
    other = build_trial()
    TrialSiteFactory(trial=other, site=world.site_a)
    other_a1 = screened(trial=other, site=world.site_a, coordinator=entry_user(other, world.site_a))
    assert [a1.code, a2.code, b1.code, other_a1.code] == ["SA-0001", "SA-0002", "SB-0001", "SA-0001"]
    assert TrialSite.objects.get(trial=world.trial, site=world.site_a).last_subject_number == 2


def test_screening_logs_the_first_transition(world):
    subject = screened_a(world, on=days_ago(30))
    assert subject.status == S.SCREENING
    rows = list(subject.transitions.values_list("from_status", "to_status", "recorded_by", "effective_on", "reason"))
    assert rows == [("", S.SCREENING, world.coordinator.pk, days_ago(30), "")]


@pytest.mark.parametrize("status", [TrialSite.Status.PENDING, TrialSite.Status.ON_HOLD, TrialSite.Status.CLOSED])
def test_a_site_not_active_for_the_trial_cannot_screen(world, status):
    TrialSite.objects.filter(trial=world.trial, site=world.site_a).update(status=status)
    with refused(RuleViolation, "site_not_active", field="site"):
        screened_a(world)


def test_a_site_without_a_trial_site_cannot_screen(world):
    site_c = SiteFactory(code="SC")
    user = entry_user(world.trial, site_c)  # a member there, but the site never joined the trial
    with refused(RuleViolation, "site_not_active", field="site"):
        screened(trial=world.trial, site=site_c, coordinator=user)


def test_screening_before_the_site_was_activated_is_refused(world):
    TrialSite.objects.filter(trial=world.trial, site=world.site_a).update(activated_on=days_ago(10))
    with refused(RuleViolation, "before_site_activation", field="screened_on"):
        screened_a(world, on=days_ago(11))


@pytest.mark.parametrize("status", [s for s in Trial.Status.values if s != Trial.Status.RECRUITING])
def test_a_trial_not_recruiting_cannot_screen(world, status):
    Trial.objects.filter(pk=world.trial.pk).update(status=status)
    world.trial.refresh_from_db()
    with refused(StateConflict, "trial_not_recruiting"):
        screened_a(world)


def test_screening_in_the_future_is_refused(world):
    with refused(RuleViolation, "date_in_future", field="screened_on"):
        screened_a(world, on=tomorrow_at(world.site_a))


def test_screening_today_at_the_site_is_accepted(world):
    assert screened_a(world, on=local_today(world.site_a)).screened_on == local_today(world.site_a)


def test_future_dates_are_judged_in_the_sites_time_zone(world):
    ahead = SiteFactory(code="KI", time_zone="Pacific/Kiritimati")  # UTC+14
    behind = SiteFactory(code="BI", time_zone="Etc/GMT+12")  # UTC-12: always a day or two behind "ahead"
    for site in (ahead, behind):
        TrialSiteFactory(trial=world.trial, site=site)
    user = entry_user(world.trial, ahead, behind)
    day = local_today(ahead)
    assert day > local_today(behind)
    subject = screened(trial=world.trial, site=ahead, coordinator=user, on=day)  # today there, maybe tomorrow in UTC
    assert subject.screened_on == day
    with refused(RuleViolation, "date_in_future", field="screened_on"):
        screened(trial=world.trial, site=behind, coordinator=user, on=day)


def test_invalid_characteristics_roll_back_the_code_numbering(world):
    with invalid_and_nothing_written():  # prior CAR-T details without prior CAR-T (model constraint)
        screened_a(world, prior_cart=False, prior_cart_target="CD19")
    assert screened_a(world).code == "SA-0001"


# --- consent ---------------------------------------------------------------------------------------


def test_consent_is_recorded_with_the_age(world):
    subject = screened_a(world)
    consent = enrolment.record_consent(subject=subject, version="v2.1", consented_on=days_ago(29), age_at_consent=17,
                                       by=world.coordinator)
    subject.refresh_from_db()
    assert (consent.version, consent.consented_on, consent.recorded_by) == ("v2.1", days_ago(29), world.coordinator)
    assert subject.age_at_consent == 17
    assert subject.status == S.SCREENING  # consent is not a state change


def test_consent_in_the_future_is_refused(world):
    subject = screened_a(world)
    with refused(RuleViolation, "date_in_future", field="consented_on", subject=subject):
        enrolment.record_consent(subject=subject, version="v1", consented_on=tomorrow_at(world.site_a),
                                 age_at_consent=30, by=world.coordinator)


def test_consent_before_screening_is_refused(world):
    subject = screened_a(world, on=days_ago(30))
    with refused(RuleViolation, "consent_before_screening", field="consented_on", subject=subject):
        enrolment.record_consent(subject=subject, version="v1", consented_on=days_ago(31), age_at_consent=30,
                                 by=world.coordinator)


def test_consent_needs_the_age(world):
    subject = screened_a(world)
    with refused(RuleViolation, "age_required", field="age_at_consent", subject=subject):
        enrolment.record_consent(subject=subject, version="v1", consented_on=days_ago(29), by=world.coordinator)


@pytest.mark.parametrize("closed", [screen_failed_a, off_study_a])
def test_consent_of_a_closed_subject_is_refused(world, closed):
    subject = closed(world)
    with refused(StateConflict, "subject_closed", subject=subject):
        enrolment.record_consent(subject=subject, version="v2", consented_on=days_ago(1), age_at_consent=30,
                                 by=world.coordinator)


# --- withdrawal of consent -------------------------------------------------------------------------


def test_withdrawal_marks_every_consent_and_takes_the_subject_off_study(world):
    subject = consented_a(world)
    enrolment.record_consent(subject=subject, version="v2.0", consented_on=days_ago(15), by=world.coordinator)
    enrolment.withdraw_consent(subject=subject, withdrawn_on=days_ago(10), reason="Moved abroad",
                               by=world.coordinator)
    subject.refresh_from_db()
    assert list(subject.consents.order_by("consented_on").values_list("withdrawn_on", "withdrawal_reason")) == [
        (days_ago(10), "Moved abroad"), (days_ago(10), "Moved abroad")]
    assert (subject.status, subject.off_study_on, subject.off_study_reason, subject.off_study_detail) == (
        S.OFF_STUDY, days_ago(10), OffStudyReason.CONSENT_WITHDRAWN, "Moved abroad")
    last = subject.transitions.latest("pk")
    assert (last.from_status, last.to_status, last.effective_on, last.reason, last.recorded_by) == (
        S.SCREENING, S.OFF_STUDY, days_ago(10), "Moved abroad", world.coordinator)


def test_withdrawal_without_consent_is_refused(world):
    subject = screened_a(world)
    with refused(StateConflict, "no_consent", subject=subject):
        enrolment.withdraw_consent(subject=subject, withdrawn_on=days_ago(1), reason="x", by=world.coordinator)


@pytest.mark.parametrize("reason", ["", "   "])
def test_withdrawal_needs_a_reason(world, reason):
    subject = consented_a(world)
    with refused(RuleViolation, "reason_required", field="reason", subject=subject):
        enrolment.withdraw_consent(subject=subject, withdrawn_on=days_ago(1), reason=reason, by=world.coordinator)


def test_withdrawal_in_the_future_is_refused(world):
    subject = consented_a(world)
    with refused(RuleViolation, "date_in_future", field="withdrawn_on", subject=subject):
        enrolment.withdraw_consent(subject=subject, withdrawn_on=tomorrow_at(world.site_a), reason="x",
                                   by=world.coordinator)


def test_withdrawal_before_consent_is_refused(world):
    subject = consented_a(world, on=days_ago(29))
    with refused(RuleViolation, "withdrawal_before_consent", field="withdrawn_on", subject=subject):
        enrolment.withdraw_consent(subject=subject, withdrawn_on=days_ago(30), reason="x", by=world.coordinator)


def test_withdrawal_before_a_later_re_consent_is_refused(world):
    # Dating the withdrawal before the newest consent would store a consent withdrawn before it was signed.
    subject = consented_a(world, on=days_ago(29))
    enrolment.record_consent(subject=subject, version="v2.0", consented_on=days_ago(5), by=world.coordinator)
    with refused(RuleViolation, "withdrawal_before_consent", field="withdrawn_on", subject=subject):
        enrolment.withdraw_consent(subject=subject, withdrawn_on=days_ago(10), reason="x", by=world.coordinator)


@pytest.mark.parametrize("closed", [screen_failed_a, off_study_a, withdrawn_a])
def test_withdrawal_of_a_closed_subject_is_refused(world, closed):
    subject = closed(world)
    with refused(StateConflict, "subject_closed", subject=subject):
        enrolment.withdraw_consent(subject=subject, withdrawn_on=days_ago(1), reason="x", by=world.coordinator)


# --- withdrawn consent blocks every later procedure ------------------------------------------------


def test_after_withdrawal_consent_cannot_be_given_again(world):
    subject = withdrawn_a(world)
    with refused(StateConflict, "subject_closed", subject=subject):
        enrolment.record_consent(subject=subject, version="v2", consented_on=days_ago(1), by=world.coordinator)


def test_after_withdrawal_eligibility_cannot_be_assessed(world):
    subject = withdrawn_a(world)
    with refused(StateConflict, "not_screening", subject=subject):
        enrolment.assess_eligibility(subject=subject, assessed_on=days_ago(1), answers=all_met(world.trial),
                                     by=world.coordinator)


def test_after_withdrawal_an_earlier_assessment_cannot_be_confirmed(world):
    subject, assessment = assessed_a(world)
    withdrawn_a(world, subject)
    with refused(StateConflict, "not_screening", subject=subject):
        enrolment.confirm_eligibility(assessment=assessment, by=world.investigator)


def test_after_withdrawal_no_measurement_is_recorded(world):
    subject = withdrawn_a(world)
    with refused(StateConflict, "consent_withdrawn", subject=subject):
        record_body_measurement(subject=subject, measured_on=days_ago(1), height_cm=Decimal(170),
                                weight_kg=Decimal(60), by=world.coordinator)


def test_after_withdrawal_no_measurement_is_recorded_even_dated_before_it(world):
    subject = withdrawn_a(world)  # withdrawn 10 days ago
    with refused(StateConflict, "consent_withdrawn", subject=subject):
        record_body_measurement(subject=subject, measured_on=days_ago(20), height_cm=Decimal(170),
                                weight_kg=Decimal(60), by=world.coordinator)


def test_after_withdrawal_the_subject_cannot_be_enrolled(world):
    subject = eligible_a(world)
    withdrawn_a(world, subject)
    with refused(StateConflict, "transition_not_allowed", subject=subject):
        enrolment.enrol_subject(subject=subject, cohort=adult(world.trial), enrolled_on=days_ago(1),
                                by=world.coordinator)


def test_after_withdrawal_the_subject_cannot_be_taken_off_study_again(world):
    subject = withdrawn_a(world)
    with refused(StateConflict, "transition_not_allowed", subject=subject):
        enrolment.take_off_study(subject=subject, off_on=days_ago(1), reason=OffStudyReason.DEATH,
                                 by=world.coordinator)


def test_after_withdrawal_no_screen_failure_is_recorded(world):
    subject = withdrawn_a(world)
    with refused(StateConflict, "transition_not_allowed", subject=subject):
        enrolment.record_screen_failure(subject=subject, failed_on=days_ago(1), reason="x", by=world.coordinator)


# --- eligibility -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "eligible"), [
    ({}, True),
    ({"I1": False}, False),  # an inclusion criterion not met
    ({"I2": False}, False),
    ({"E1": True}, False),  # an exclusion criterion present
])
def test_eligibility_is_computed_from_the_answers(world, overrides, eligible):
    subject = consented_a(world)
    answers = all_met(world.trial, **overrides)
    assessment = enrolment.assess_eligibility(subject=subject, assessed_on=days_ago(25), answers=answers,
                                              by=world.coordinator)
    assert assessment.eligible is eligible
    assert {a.criterion: a.met for a in assessment.answers.all()} == answers
    assert (assessment.assessed_by, assessment.confirmed_by, assessment.confirmed_at) == (world.coordinator, None, None)
    subject.refresh_from_db()
    assert subject.status == S.SCREENING  # not eligible until an investigator confirms


def test_no_eligibility_assessment_before_consent(world):
    subject = screened_a(world)
    with refused(RuleViolation, "eligibility_before_consent", field="assessed_on", subject=subject):
        enrolment.assess_eligibility(subject=subject, assessed_on=days_ago(25), answers=all_met(world.trial),
                                     by=world.coordinator)


def test_no_eligibility_assessment_dated_before_the_consent(world):
    subject = consented_a(world, on=days_ago(20))
    with refused(RuleViolation, "eligibility_before_consent", field="assessed_on", subject=subject):
        enrolment.assess_eligibility(subject=subject, assessed_on=days_ago(21), answers=all_met(world.trial),
                                     by=world.coordinator)


def test_eligibility_assessment_in_the_future_is_refused(world):
    subject = consented_a(world)
    with refused(RuleViolation, "date_in_future", field="assessed_on", subject=subject):
        enrolment.assess_eligibility(subject=subject, assessed_on=tomorrow_at(world.site_a),
                                     answers=all_met(world.trial), by=world.coordinator)


def test_eligibility_answers_must_cover_every_active_criterion(world):
    subject = consented_a(world)
    answers = all_met(world.trial)
    answers.pop(next(iter(answers)))
    with refused(RuleViolation, "criteria_incomplete", field="answers", subject=subject):
        enrolment.assess_eligibility(subject=subject, assessed_on=days_ago(25), answers=answers, by=world.coordinator)


def test_eligibility_answers_to_another_trials_criterion_are_refused(world):
    subject = consented_a(world)
    foreign = CriterionFactory(trial=build_trial(), number=9)
    with refused(RuleViolation, "unknown_criterion", field="answers", subject=subject):
        enrolment.assess_eligibility(subject=subject, assessed_on=days_ago(25),
                                     answers={**all_met(world.trial), foreign: True}, by=world.coordinator)


def test_eligibility_answers_to_a_retired_criterion_are_refused(world):
    subject = consented_a(world)
    retired = CriterionFactory(trial=world.trial, number=9, active=False)
    with refused(RuleViolation, "unknown_criterion", field="answers", subject=subject):
        enrolment.assess_eligibility(subject=subject, assessed_on=days_ago(25),
                                     answers={**all_met(world.trial), retired: True}, by=world.coordinator)


@pytest.mark.parametrize("state", [enrolled_a, screen_failed_a])
def test_eligibility_is_assessed_only_during_screening(world, state):
    subject = state(world)
    with refused(StateConflict, "not_screening", subject=subject):
        enrolment.assess_eligibility(subject=subject, assessed_on=days_ago(1), answers=all_met(world.trial),
                                     by=world.coordinator)


# --- confirmation of eligibility -------------------------------------------------------------------


def test_investigator_confirms_an_eligible_assessment(world):
    subject, assessment = assessed_a(world)
    enrolment.confirm_eligibility(assessment=assessment, by=world.investigator)
    subject.refresh_from_db()
    assessment.refresh_from_db()
    assert subject.status == S.ELIGIBLE
    assert assessment.confirmed_by == world.investigator and assessment.confirmed_at is not None
    last = subject.transitions.latest("pk")
    assert (last.from_status, last.to_status, last.recorded_by, last.effective_on) == (
        S.SCREENING, S.ELIGIBLE, world.investigator, assessment.assessed_on)
    assert last.reason == "Eligibility confirmed by investigator"


def test_a_confirmed_ineligible_assessment_leaves_the_subject_in_screening(world):
    subject, assessment = assessed_a(world, eligible=False)
    transitions = subject.transitions.count()
    enrolment.confirm_eligibility(assessment=assessment, by=world.investigator)
    subject.refresh_from_db()
    assessment.refresh_from_db()
    assert assessment.confirmed_by == world.investigator
    assert subject.status == S.SCREENING
    assert subject.transitions.count() == transitions


@pytest.mark.parametrize("who", ["coordinator", "monitor", "data_manager"])
def test_only_an_investigator_confirms_eligibility(world, who):
    subject, assessment = assessed_a(world)
    with refused(PermissionRefused, "investigator_required", subject=subject):
        enrolment.confirm_eligibility(assessment=assessment, by=getattr(world, who))


def test_an_investigator_of_another_site_cannot_confirm_eligibility(world):
    subject, assessment = assessed_a(world)
    with refused(PermissionRefused, "investigator_required", subject=subject):
        enrolment.confirm_eligibility(assessment=assessment, by=world.investigator_b)


def test_an_assessment_is_confirmed_once(world):
    subject, assessment = assessed_a(world, eligible=False)
    enrolment.confirm_eligibility(assessment=assessment, by=world.investigator)
    with refused(StateConflict, "already_confirmed", subject=subject):
        enrolment.confirm_eligibility(assessment=assessment, by=world.investigator)


def test_a_second_assessment_cannot_be_confirmed_once_eligible(world):
    subject, first = assessed_a(world)
    second = enrolment.assess_eligibility(subject=subject, assessed_on=days_ago(24), answers=all_met(world.trial),
                                          by=world.coordinator)
    enrolment.confirm_eligibility(assessment=first, by=world.investigator)
    with refused(StateConflict, "not_screening", subject=subject):
        enrolment.confirm_eligibility(assessment=second, by=world.investigator)


def test_an_assessment_of_a_screen_failed_subject_cannot_be_confirmed(world):
    subject, assessment = assessed_a(world)
    enrolment.record_screen_failure(subject=subject, failed_on=days_ago(24), reason="Lost CD19", by=world.coordinator)
    with refused(StateConflict, "not_screening", subject=subject):
        enrolment.confirm_eligibility(assessment=assessment, by=world.investigator)


# --- enrolment -------------------------------------------------------------------------------------


def test_an_eligible_subject_is_enrolled_in_a_cohort(world):
    subject = eligible_a(world)
    cohort = adult(world.trial)
    enrolment.enrol_subject(subject=subject, cohort=cohort, enrolled_on=days_ago(20), by=world.coordinator)
    subject.refresh_from_db()
    assert (subject.status, subject.cohort, subject.enrolled_on) == (S.ENROLLED, cohort, days_ago(20))
    last = subject.transitions.latest("pk")
    assert (last.from_status, last.to_status, last.recorded_by, last.effective_on, last.reason) == (
        S.ELIGIBLE, S.ENROLLED, world.coordinator, days_ago(20), f"Enrolled in {cohort}")


def test_no_enrolment_from_screening(world):
    subject = consented_a(world)
    with refused(StateConflict, "eligibility_not_confirmed", subject=subject) as err:
        enrolment.enrol_subject(subject=subject, cohort=adult(world.trial), enrolled_on=days_ago(20),
                                by=world.coordinator)
    assert "eligibility has not been confirmed" in err.value.message


def test_no_enrolment_with_only_an_unconfirmed_assessment(world):
    subject, _assessment = assessed_a(world)
    with refused(StateConflict, "eligibility_not_confirmed", subject=subject):
        enrolment.enrol_subject(subject=subject, cohort=adult(world.trial), enrolled_on=days_ago(20),
                                by=world.coordinator)


def test_no_enrolment_after_a_confirmed_ineligible_assessment(world):
    subject, assessment = assessed_a(world, eligible=False)
    enrolment.confirm_eligibility(assessment=assessment, by=world.investigator)
    with refused(StateConflict, "eligibility_not_confirmed", subject=subject):
        enrolment.enrol_subject(subject=subject, cohort=adult(world.trial), enrolled_on=days_ago(20),
                                by=world.coordinator)


@pytest.mark.parametrize("state", [screen_failed_a, enrolled_a, off_study_a])
def test_enrolment_is_refused_where_the_state_machine_forbids_it(world, state):
    subject = state(world)
    with refused(StateConflict, "transition_not_allowed", subject=subject):
        enrolment.enrol_subject(subject=subject, cohort=adult(world.trial), enrolled_on=days_ago(1),
                                by=world.coordinator)


def test_enrolment_needs_a_cohort_of_the_trial(world):
    subject = eligible_a(world)
    foreign = adult(build_trial())
    with refused(RuleViolation, "cohort_not_in_trial", field="cohort", subject=subject):
        enrolment.enrol_subject(subject=subject, cohort=foreign, enrolled_on=days_ago(20), by=world.coordinator)


def test_enrolment_needs_a_cohort(world):
    subject = eligible_a(world)
    with refused(RuleViolation, "cohort_not_in_trial", field="cohort", subject=subject):
        enrolment.enrol_subject(subject=subject, cohort=None, enrolled_on=days_ago(20), by=world.coordinator)


def test_enrolment_in_the_future_is_refused(world):
    subject = eligible_a(world)
    with refused(RuleViolation, "date_in_future", field="enrolled_on", subject=subject):
        enrolment.enrol_subject(subject=subject, cohort=adult(world.trial), enrolled_on=tomorrow_at(world.site_a),
                                by=world.coordinator)


def test_enrolment_before_the_eligibility_assessment_is_refused(world):
    subject = eligible_a(world)  # assessed 25 days ago
    with refused(RuleViolation, "enrolment_before_eligibility", field="enrolled_on", subject=subject):
        enrolment.enrol_subject(subject=subject, cohort=adult(world.trial), enrolled_on=days_ago(26),
                                by=world.coordinator)


# --- screen failure --------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [screened_a, eligible_a])
def test_screen_failure_is_logged_with_its_reason(world, state):
    subject = state(world)
    before = subject.status
    enrolment.record_screen_failure(subject=subject, failed_on=days_ago(3), reason="CD19-negative relapse",
                                    by=world.coordinator)
    subject.refresh_from_db()
    assert subject.status == S.SCREEN_FAILED
    last = subject.transitions.latest("pk")
    assert (last.from_status, last.to_status, last.recorded_by, last.effective_on, last.reason) == (
        before, S.SCREEN_FAILED, world.coordinator, days_ago(3), "CD19-negative relapse")


@pytest.mark.parametrize("reason", ["", "  \n"])
def test_a_screen_failure_needs_a_reason(world, reason):
    subject = screened_a(world)
    with refused(RuleViolation, "reason_required", field="reason", subject=subject):
        enrolment.record_screen_failure(subject=subject, failed_on=days_ago(3), reason=reason, by=world.coordinator)


def test_a_screen_failure_in_the_future_is_refused(world):
    subject = screened_a(world)
    with refused(RuleViolation, "date_in_future", field="failed_on", subject=subject):
        enrolment.record_screen_failure(subject=subject, failed_on=tomorrow_at(world.site_a), reason="x",
                                        by=world.coordinator)


def test_a_screen_failure_before_screening_is_refused(world):
    subject = screened_a(world, on=days_ago(30))
    with refused(RuleViolation, "before_screening", field="failed_on", subject=subject):
        enrolment.record_screen_failure(subject=subject, failed_on=days_ago(31), reason="x", by=world.coordinator)


@pytest.mark.parametrize("state", [enrolled_a, screen_failed_a, off_study_a])
def test_a_screen_failure_is_refused_where_the_state_machine_forbids_it(world, state):
    subject = state(world)
    with refused(StateConflict, "transition_not_allowed", subject=subject):
        enrolment.record_screen_failure(subject=subject, failed_on=days_ago(1), reason="x", by=world.coordinator)


# --- off study -------------------------------------------------------------------------------------


def test_off_study_records_date_reason_and_detail(world):
    subject = enrolled_a(world)
    enrolment.take_off_study(subject=subject, off_on=days_ago(2), reason=OffStudyReason.OTHER,
                             detail="Relocated to another country", by=world.coordinator)
    subject.refresh_from_db()
    assert (subject.status, subject.off_study_on, subject.off_study_reason, subject.off_study_detail) == (
        S.OFF_STUDY, days_ago(2), OffStudyReason.OTHER, "Relocated to another country")
    last = subject.transitions.latest("pk")
    assert (last.from_status, last.to_status, last.recorded_by, last.effective_on, last.reason) == (
        S.ENROLLED, S.OFF_STUDY, world.coordinator, days_ago(2), "Other. Relocated to another country")


def test_off_study_from_screening_after_consent(world):
    subject = consented_a(world)
    enrolment.take_off_study(subject=subject, off_on=days_ago(2), reason=OffStudyReason.DEATH, by=world.coordinator)
    subject.refresh_from_db()
    assert (subject.status, subject.off_study_reason) == (S.OFF_STUDY, OffStudyReason.DEATH)


def test_off_study_needs_a_date(world):
    subject = enrolled_a(world)
    with refused(RuleViolation, "date_required", field="off_on", subject=subject):
        enrolment.take_off_study(subject=subject, off_on=None, reason=OffStudyReason.DEATH, by=world.coordinator)


@pytest.mark.parametrize("reason", ["", "bored"])
def test_off_study_needs_a_listed_reason(world, reason):
    subject = enrolled_a(world)
    with refused(RuleViolation, "reason_required", field="reason", subject=subject):
        enrolment.take_off_study(subject=subject, off_on=days_ago(2), reason=reason, by=world.coordinator)


@pytest.mark.parametrize("detail", ["", "   "])
def test_off_study_for_another_reason_needs_detail(world, detail):
    subject = enrolled_a(world)
    with refused(RuleViolation, "detail_required", field="detail", subject=subject):
        enrolment.take_off_study(subject=subject, off_on=days_ago(2), reason=OffStudyReason.OTHER, detail=detail,
                                 by=world.coordinator)


def test_off_study_for_withdrawn_consent_goes_through_the_withdrawal(world):
    subject = enrolled_a(world)
    with refused(RuleViolation, "use_withdrawal", field="reason", subject=subject):
        enrolment.take_off_study(subject=subject, off_on=days_ago(2), reason=OffStudyReason.CONSENT_WITHDRAWN,
                                 by=world.coordinator)


def test_off_study_in_the_future_is_refused(world):
    subject = enrolled_a(world)
    with refused(RuleViolation, "date_in_future", field="off_on", subject=subject):
        enrolment.take_off_study(subject=subject, off_on=tomorrow_at(world.site_a), reason=OffStudyReason.DEATH,
                                 by=world.coordinator)


def test_off_study_before_consent_is_refused(world):
    subject = consented_a(world, on=days_ago(29))
    with refused(RuleViolation, "before_consent", field="off_on", subject=subject):
        enrolment.take_off_study(subject=subject, off_on=days_ago(30), reason=OffStudyReason.DEATH,
                                 by=world.coordinator)


def test_off_study_needs_consent(world):
    subject = screened_a(world)
    with refused(StateConflict, "not_consented", subject=subject):
        enrolment.take_off_study(subject=subject, off_on=days_ago(2), reason=OffStudyReason.DEATH,
                                 by=world.coordinator)


@pytest.mark.parametrize("state", [off_study_a, screen_failed_a])
def test_off_study_is_refused_where_the_state_machine_forbids_it(world, state):
    subject = state(world)
    with refused(StateConflict, "transition_not_allowed", subject=subject):
        enrolment.take_off_study(subject=subject, off_on=days_ago(1), reason=OffStudyReason.DEATH,
                                 by=world.coordinator)


# --- amendments ------------------------------------------------------------------------------------


def test_an_amendment_changes_the_values_and_records_its_reason(world):
    subject = screened_a(world)
    amended = enrolment.amend_subject(subject=subject, changes={"prior_lines": 3, "cns_status": "CNS2"},
                                      reason="Transcription error, see source", by=world.coordinator)
    subject.refresh_from_db()
    assert (subject.prior_lines, subject.cns_status) == (3, "CNS2") == (amended.prior_lines, amended.cns_status)
    event = SubjectEvent.objects.filter(pgh_obj=subject, pgh_label="update").latest("pgh_id")
    assert (event.prior_lines, event.cns_status) == (3, "CNS2")
    assert event.pgh_context.metadata["reason"] == "Transcription error, see source"


@pytest.mark.parametrize("reason", ["", "  "])
def test_an_amendment_needs_a_reason(world, reason):
    subject = screened_a(world)
    with refused(RuleViolation, "reason_required", field="reason_for_change", subject=subject):
        enrolment.amend_subject(subject=subject, changes={"prior_lines": 3}, reason=reason, by=world.coordinator)


@pytest.mark.parametrize("changes", [{"screened_on": days_ago(100)}, {"status": S.ENROLLED}, {"code": "SA-9999"}])
def test_only_characteristics_can_be_amended(world, changes):
    subject = screened_a(world)
    with refused(RuleViolation, "not_amendable", subject=subject):
        enrolment.amend_subject(subject=subject, changes=changes, reason="Because", by=world.coordinator)


def test_unchanged_values_need_no_reason_and_write_nothing(world):
    subject = screened_a(world, prior_lines=2)
    before = table_rows()
    enrolment.amend_subject(subject=subject, changes={"prior_lines": 2, "sex": subject.sex}, reason="",
                            by=world.coordinator)
    assert table_rows() == before


def test_an_invalid_amendment_writes_nothing(world):
    subject = screened_a(world)
    with invalid_and_nothing_written():
        enrolment.amend_subject(subject=subject, changes={"prior_cart_target": "CD19"}, reason="Source",
                                by=world.coordinator)


# --- height and weight -----------------------------------------------------------------------------


def test_a_measurement_is_recorded_after_consent(world):
    subject = consented_a(world, on=days_ago(29))
    m = record_body_measurement(subject=subject, measured_on=days_ago(29), height_cm=Decimal("162.5"),
                                weight_kg=Decimal("51.2"), by=world.coordinator)
    assert (m.subject, m.measured_on, m.height_cm, m.weight_kg, m.recorded_by) == (
        subject, days_ago(29), Decimal("162.5"), Decimal("51.2"), world.coordinator)


def test_no_measurement_without_consent(world):
    subject = screened_a(world)
    with refused(RuleViolation, "no_consent", field="measured_on", subject=subject):
        record_body_measurement(subject=subject, measured_on=days_ago(5), height_cm=Decimal(170),
                                weight_kg=Decimal(60), by=world.coordinator)


def test_no_measurement_dated_before_consent(world):
    subject = consented_a(world, on=days_ago(29))
    with refused(RuleViolation, "no_consent", field="measured_on", subject=subject):
        record_body_measurement(subject=subject, measured_on=days_ago(30), height_cm=Decimal(170),
                                weight_kg=Decimal(60), by=world.coordinator)


def test_a_measurement_in_the_future_is_refused(world):
    subject = consented_a(world)
    with refused(RuleViolation, "date_in_future", field="measured_on", subject=subject):
        record_body_measurement(subject=subject, measured_on=tomorrow_at(world.site_a), height_cm=Decimal(170),
                                weight_kg=Decimal(60), by=world.coordinator)


def test_an_implausible_measurement_writes_nothing(world):
    subject = consented_a(world)
    with invalid_and_nothing_written():
        record_body_measurement(subject=subject, measured_on=days_ago(5), height_cm=Decimal(400),
                                weight_kg=Decimal(60), by=world.coordinator)
