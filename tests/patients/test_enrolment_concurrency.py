"""Locked services under two threads at once (real PostgreSQL connections, committed data)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from config.errors import DomainError
from patients.models import Subject, SubjectStatus, SubjectTransition
from patients.services import enrolment
from tests.concurrency import run_together
from tests.factories import SUBJECT_DEFAULTS, days_ago, eligible_subject
from trials.models import TrialSite

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("restore_catalogue")]

ROUNDS = 4


def test_concurrent_screenings_at_one_site_get_distinct_codes(world):
    def screen(by: Any) -> Callable[[], Subject]:
        return lambda: enrolment.screen_subject(trial=world.trial, site=world.site_a, screened_on=days_ago(30),
                                                by=by, **SUBJECT_DEFAULTS)

    for _ in range(ROUNDS):
        results = run_together(screen(world.coordinator), screen(world.investigator))
        assert [kind for kind, _ in results] == ["ok", "ok"], results
    codes = sorted(Subject.objects.filter(trial=world.trial, site=world.site_a).values_list("code", flat=True))
    assert codes == [f"SA-{n:04d}" for n in range(1, 2 * ROUNDS + 1)]
    assert TrialSite.objects.get(trial=world.trial, site=world.site_a).last_subject_number == 2 * ROUNDS


def test_concurrent_enrolments_of_one_subject_enrol_it_once(world):
    cohort = world.trial.cohorts.get(code="ADULT")
    for _ in range(ROUNDS):
        subject = eligible_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                                   investigator=world.investigator)

        def enrol(by: Any, subject: Subject = subject) -> Callable[[], Subject]:
            return lambda: enrolment.enrol_subject(subject=subject, cohort=cohort, enrolled_on=days_ago(20), by=by)

        results = run_together(enrol(world.coordinator), enrol(world.investigator))
        kinds = sorted(kind for kind, _ in results)
        assert kinds == ["error", "ok"], results
        error = next(value for kind, value in results if kind == "error")
        assert isinstance(error, DomainError) and error.code == "transition_not_allowed", error
        assert SubjectTransition.objects.filter(subject=subject, to_status=SubjectStatus.ENROLLED).count() == 1
        subject.refresh_from_db()
        assert subject.status == SubjectStatus.ENROLLED


def test_concurrent_screening_and_correction_to_one_screening_number_store_it_once(world):
    """A screening and a correction naming the same number take turns on the trial-site row: one wins, the
    other is refused with duplicate_screening_number, never an IntegrityError."""
    for n in range(ROUNDS):
        number = f"SCR-{n}"
        existing = enrolment.screen_subject(trial=world.trial, site=world.site_a, screened_on=days_ago(30),
                                            by=world.coordinator, **SUBJECT_DEFAULTS)
        results = run_together(
            lambda number=number: enrolment.screen_subject(
                trial=world.trial, site=world.site_a, screened_on=days_ago(30), by=world.coordinator,
                screening_number=number, **SUBJECT_DEFAULTS),
            lambda number=number, existing=existing: enrolment.amend_subject(
                subject=existing, changes={"screening_number": number}, reason="Log number", by=world.investigator))
        kinds = sorted(kind for kind, _ in results)
        assert kinds == ["error", "ok"], results
        error = next(value for kind, value in results if kind == "error")
        assert isinstance(error, DomainError) and error.code == "duplicate_screening_number", error
        assert Subject.objects.filter(site=world.site_a, screening_number=number).count() == 1
