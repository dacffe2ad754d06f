"""Locking under two threads at once (real PostgreSQL connections, committed data): a lock and a clinical write
racing never leave a write committed after the lock, and two data managers locking one scope get one lock."""

from __future__ import annotations

import pytest

from config.errors import StateConflict
from locking.models import Lock
from locking.services import lock_scope
from patients.models import BodyMeasurement
from tests.concurrency import run_together
from tests.factories import MembershipFactory, UserFactory
from tests.locking.support import lock, measure, site_a_subject

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("restore_catalogue")]

ROUNDS = 4


def test_a_write_racing_a_lock_commits_before_it_or_is_refused(world):
    for _ in range(ROUNDS):
        subject = site_a_subject(world)
        (write_kind, written), (lock_kind, taken) = run_together(
            lambda s=subject: measure(s, world.coordinator), lambda s=subject: lock(world, subject=s))
        assert lock_kind == "ok", taken
        if write_kind == "ok":
            assert written.created_at < taken.locked_at
        else:
            assert isinstance(written, StateConflict) and written.code == "data_locked", written
            assert not BodyMeasurement.objects.filter(subject=subject).exists()


def test_two_data_managers_locking_one_scope_get_one_lock(world):
    other = UserFactory(username="dm2")
    MembershipFactory(user=other, trial=world.trial, site=None, role="data_manager")
    for _ in range(ROUNDS):
        subject = site_a_subject(world)
        results = run_together(lambda s=subject: lock(world, subject=s),
                               lambda s=subject: lock_scope(trial=world.trial, subject=s, level="lock",
                                                            reason="Second data manager", by=other))
        kinds = sorted(kind for kind, _ in results)
        assert kinds == ["error", "ok"], results
        error = next(value for kind, value in results if kind == "error")
        assert isinstance(error, StateConflict) and error.code == "already_locked", error
        assert Lock.objects.filter(subject=subject, released_at__isnull=True).count() == 1

