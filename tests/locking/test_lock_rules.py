"""Data locks through the services: what a freeze and a lock refuse, in which scope, who may lock and release,
and the audit trail of both."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import DatabaseError, IntegrityError, transaction

from config.errors import PermissionRefused, RuleViolation, StateConflict
from locking.models import Lock, LockEvent
from locking.services import blocking_locks, check_writable, lock_scope, release_lock
from patients.models import BodyMeasurement, Subject
from tests.factories import (
    MembershipFactory,
    SiteFactory,
    TrialSiteFactory,
    UserFactory,
    build_trial,
    screened,
)
from tests.locking.support import REASON, lock, measure, site_a_subject, site_b_subject
from trials.models import TrialSite

pytestmark = pytest.mark.django_db


def refusal(call, *args, **kwargs) -> StateConflict:
    with pytest.raises(StateConflict) as err:
        call(*args, **kwargs)
    return err.value


# --- what is refused, where ------------------------------------------------------------------------


def test_locked_subject_refuses_a_clinical_write_naming_the_lock_and_writes_nothing(world):
    subject = site_a_subject(world)
    lock(world, subject=subject)
    err = refusal(measure, subject, world.coordinator)
    assert err.code == "data_locked" and err.http_status == 409
    message = err.message
    assert message.startswith(f"Subject {subject.code} of {world.trial.code} is locked (database lock) since ")
    assert f"UTC by {world.data_manager.username}; reason: {REASON}." in message
    assert not BodyMeasurement.objects.filter(subject=subject).exists()


def test_frozen_subject_refuses_clinical_writes_with_data_frozen(world):
    subject = site_a_subject(world)
    lock(world, level="freeze", subject=subject)
    err = refusal(measure, subject, world.coordinator)
    assert err.code == "data_frozen"
    assert f"Subject {subject.code} of {world.trial.code} is frozen since" in err.message
    assert not BodyMeasurement.objects.filter(subject=subject).exists()


def test_a_site_lock_refuses_only_that_sites_subjects(world):
    at_a, at_b = site_a_subject(world), site_b_subject(world)
    lock(world, site=world.site_a)
    err = refusal(measure, at_a, world.coordinator)
    assert err.code == "data_locked" and f"Site {world.site_a.code} of {world.trial.code}" in err.message
    assert measure(at_b, world.coordinator_b).pk  # site B is open
    # No new subject at the locked site either; site B still screens.
    with pytest.raises(StateConflict):
        screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    assert screened(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b).pk


def test_a_trial_lock_refuses_every_subject_and_screening(world):
    at_a, at_b = site_a_subject(world), site_b_subject(world)
    count = Subject.objects.count()
    lock(world, level="freeze")
    for subject, by in ((at_a, world.coordinator), (at_b, world.coordinator_b)):
        err = refusal(measure, subject, by)
        assert err.code == "data_frozen" and err.message.startswith(f"Trial {world.trial.code} is frozen")
    err = refusal(screened, trial=world.trial, site=world.site_b, coordinator=world.coordinator_b)
    assert err.code == "data_frozen"
    assert Subject.objects.count() == count and not BodyMeasurement.objects.exists()


def test_freeze_leaves_queries_and_signatures_open_but_a_lock_refuses_them(world):
    subject = site_a_subject(world)
    scope = {"trial_id": world.trial.pk, "site_id": subject.site_id, "subject_id": subject.pk}
    freeze = lock(world, level="freeze", subject=subject)
    check_writable(**scope, activity="query")
    check_writable(**scope, activity="signature")
    assert refusal(check_writable, **scope).code == "data_frozen"
    release_lock(lock=freeze, reason="Queries resolved", by=world.data_manager)
    lock(world, level="lock", site=world.site_a)
    for activity in ("data", "query", "signature"):
        err = refusal(check_writable, **scope, activity=activity)
        assert err.code == "data_locked" and f"Site {world.site_a.code}" in err.message


def test_the_strongest_and_widest_covering_lock_is_named(world):
    subject = site_a_subject(world)
    lock(world, level="freeze")
    lock(world, level="lock", subject=subject)
    err = refusal(measure, subject, world.coordinator)
    assert err.code == "data_locked" and err.message.startswith(f"Subject {subject.code}")
    lock(world, level="lock", site=world.site_a)
    assert refusal(measure, subject, world.coordinator).message.startswith(f"Site {world.site_a.code}")


def test_after_release_writes_succeed(world):
    subject = site_a_subject(world)
    taken = lock(world, site=world.site_a)
    refusal(measure, subject, world.coordinator)
    released = release_lock(lock=taken, reason="Database re-opened for query resolution", by=world.data_manager)
    assert released.released_by == world.data_manager and released.released_at is not None
    assert measure(subject, world.coordinator).pk


def test_check_writable_is_one_query(world, django_assert_num_queries):
    subject = site_a_subject(world)
    scope = {"trial_id": world.trial.pk, "site_id": subject.site_id, "subject_id": subject.pk}
    with django_assert_num_queries(1):
        check_writable(**scope)
    lock(world, subject=subject)
    with django_assert_num_queries(1):
        refusal(check_writable, **scope)


def test_blocking_locks_names_each_locked_subject_of_a_batch(world, django_assert_num_queries):
    at_a, other_a, at_b = site_a_subject(world), site_a_subject(world), site_b_subject(world)
    lock(world, level="freeze", site=world.site_b)
    lock(world, level="lock", subject=at_a)
    batch = [(s.pk, s.site_id, s.trial_id) for s in (at_a, other_a, at_b)]
    with django_assert_num_queries(1):  # nobody refused: one query
        assert blocking_locks(batch[1:2]) == {}
    with django_assert_num_queries(2):  # refusals: and one for the locks' descriptions
        found = blocking_locks(batch)
    assert set(found) == {at_a.pk, at_b.pk}
    assert found[at_a.pk][0] == "data_locked" and found[at_a.pk][1].startswith(f"Subject {at_a.code}")
    assert found[at_b.pk][0] == "data_frozen" and found[at_b.pk][1].startswith(f"Site {world.site_b.code}")
    assert blocking_locks(batch[2:], activity="query") == {}  # a freeze leaves queries open
    with django_assert_num_queries(0):
        assert blocking_locks([]) == {}


def test_blocking_locks_names_the_lock_check_writable_names(world):
    subject = site_a_subject(world)
    lock(world, level="freeze")
    lock(world, level="lock", site=world.site_a)
    lock(world, level="lock", subject=subject)
    with pytest.raises(StateConflict) as err:
        check_writable(trial_id=world.trial.pk, site_id=subject.site_id, subject_id=subject.pk)
    assert blocking_locks([(subject.pk, subject.site_id, subject.trial_id)]) == {
        subject.pk: (err.value.code, err.value.message)}
    assert err.value.message.startswith(f"Site {world.site_a.code}")


# --- taking and releasing a lock ----------------------------------------------------------------------


@pytest.mark.parametrize("role", ["coordinator", "investigator", "monitor"])
def test_only_data_managers_lock(world, role):
    with pytest.raises(PermissionRefused) as err:
        lock_scope(trial=world.trial, level="lock", reason=REASON, by=getattr(world, role))
    assert err.value.code == "not_permitted" and err.value.http_status == 403
    assert not Lock.objects.exists()


def test_a_site_bound_data_manager_locks_only_their_site(world):
    site_dm = UserFactory(username="dm_site_a")
    MembershipFactory(user=site_dm, trial=world.trial, site=world.site_a, role="data_manager")
    own = lock_scope(trial=world.trial, site=world.site_a, level="freeze", reason=REASON, by=site_dm)
    assert own.site == world.site_a
    for scope in ({"site": world.site_b}, {}):  # another site, the whole trial
        with pytest.raises(PermissionRefused):
            lock_scope(trial=world.trial, level="lock", reason=REASON, by=site_dm, **scope)
    assert Lock.objects.count() == 1
    other = lock(world, site=world.site_b)
    with pytest.raises(PermissionRefused):
        release_lock(lock=other, reason="Not mine", by=site_dm)


def test_eligibility_cannot_be_confirmed_on_locked_data(world):
    from patients.services.enrolment import confirm_eligibility
    from tests.factories import assessed

    subject, assessment = assessed(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    lock(world, subject=subject)
    assert refusal(confirm_eligibility, assessment=assessment, by=world.investigator).code == "data_locked"
    assessment.refresh_from_db()
    assert assessment.confirmed_at is None


def test_only_data_managers_release(world):
    taken = lock(world)
    with pytest.raises(PermissionRefused):
        release_lock(lock=taken, reason="Please", by=world.coordinator)
    taken.refresh_from_db()
    assert taken.active


def test_a_lock_needs_a_reason(world):
    with pytest.raises(RuleViolation) as err:
        lock(world, reason="  ")
    assert (err.value.code, err.value.field) == ("reason_required", "reason")


def test_releasing_needs_a_reason_and_happens_once(world):
    taken = lock(world)
    with pytest.raises(RuleViolation) as err:
        release_lock(lock=taken, reason=" ", by=world.data_manager)
    assert (err.value.code, err.value.field) == ("reason_required", "reason")
    taken.refresh_from_db()
    assert taken.active
    release_lock(lock=taken, reason="Re-opened", by=world.data_manager)
    assert refusal(release_lock, lock=taken, reason="Again", by=world.data_manager).code == "already_released"


def test_a_scope_has_one_active_lock(world):
    subject = site_a_subject(world)
    lock(world, subject=subject)
    err = refusal(lock, world, subject=subject)
    assert err.code == "already_locked" and f"Subject {subject.code}" in err.message
    assert refusal(lock, world, level="freeze", subject=subject).code == "already_locked"  # loosen = release
    assert Lock.objects.count() == 1


def test_a_freeze_is_tightened_into_a_lock_in_one_step(world):
    freeze = lock(world, level="freeze", site=world.site_a)
    tightened = lock(world, level="lock", site=world.site_a, reason="Final database lock")
    freeze.refresh_from_db()
    assert not freeze.active and freeze.released_by == world.data_manager
    assert freeze.release_reason == "Tightened into a database lock: Final database lock"
    assert tightened.active and tightened.level == "lock"
    assert list(Lock.objects.filter(released_at__isnull=True)) == [tightened]


def test_the_scope_must_be_consistent(world):
    at_b = site_b_subject(world)
    with pytest.raises(RuleViolation) as err:
        lock(world, site=world.site_a, subject=at_b)
    assert (err.value.code, err.value.field) == ("subject_not_at_site", "subject")
    trial, coordinator = _second_trial(world)
    other_trial = screened(trial=trial, site=world.site_a, coordinator=coordinator)
    with pytest.raises(RuleViolation) as err:
        lock(world, subject=other_trial)
    assert (err.value.code, err.value.field) == ("subject_not_in_trial", "subject")
    with pytest.raises(RuleViolation) as err:
        lock(world, site=SiteFactory(code="SZ"))
    assert (err.value.code, err.value.field) == ("site_not_in_trial", "site")
    with pytest.raises(RuleViolation) as err:
        lock(world, level="closed")
    assert (err.value.code, err.value.field) == ("unknown_level", "level")
    assert not Lock.objects.exists()


def test_a_subject_lock_records_the_subjects_site(world):
    subject = site_a_subject(world)
    assert lock(world, subject=subject).site == world.site_a


def _second_trial(world):
    """Another trial at site A, with its own coordinator."""
    trial = build_trial()
    TrialSiteFactory(trial=trial, site=world.site_a)
    coordinator = UserFactory()
    MembershipFactory(user=coordinator, trial=trial, site=world.site_a, role="coordinator")
    return trial, coordinator


# --- audit and integrity ----------------------------------------------------------------------------------


def test_locking_and_releasing_leave_audit_rows_with_their_reasons(world):
    taken = lock(world, level="freeze")
    release_lock(lock=taken, reason="Cleaning finished early", by=world.data_manager)
    events = list(LockEvent.objects.filter(pgh_obj=taken).select_related("pgh_context").order_by("pgh_id"))
    assert [e.pgh_label for e in events] == ["insert", "update"]
    inserted, released = events
    assert (inserted.level, inserted.reason, inserted.released_at) == ("freeze", REASON, None)
    assert inserted.pgh_context.metadata["reason"] == REASON
    assert released.released_by_id == world.data_manager.pk
    assert released.release_reason == "Cleaning finished early"
    assert released.pgh_context.metadata["reason"] == "Cleaning finished early"
    assert released.pgh_context.metadata["action"] == "release"


def test_the_database_refuses_editing_reopening_or_deleting_a_lock(world):
    taken = lock(world)
    for change in ({"reason": "Something else"}, {"level": "freeze"}):
        with pytest.raises(DatabaseError), transaction.atomic():
            Lock.objects.filter(pk=taken.pk).update(**change)
    with pytest.raises(DatabaseError), transaction.atomic():
        Lock.objects.filter(pk=taken.pk).delete()
    release_lock(lock=taken, reason="Re-opened", by=world.data_manager)
    with pytest.raises(DatabaseError), transaction.atomic():
        Lock.objects.filter(pk=taken.pk).update(released_at=None, released_by=None, release_reason="")
    taken.refresh_from_db()
    assert (taken.reason, taken.level, taken.release_reason) == (REASON, "lock", "Re-opened")


def test_the_database_keeps_one_active_lock_per_scope(world):
    lock(world)
    with pytest.raises(IntegrityError), transaction.atomic():
        Lock.objects.create(trial=world.trial, level="freeze", reason="Bypassing the service",
                            locked_by=world.data_manager, locked_at=dt.datetime.now(dt.UTC))


def test_refused_screening_numbers_no_subject(world):
    lock(world, level="freeze", site=world.site_a)
    with pytest.raises(StateConflict):
        screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    assert not Subject.objects.exists()
    assert TrialSite.objects.get(trial=world.trial, site=world.site_a).last_subject_number == 0
