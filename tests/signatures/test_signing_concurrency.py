"""Signing and a concurrent change of the same subject take turns (real connections, committed data).

Without the triggers' KEY SHARE lock on the subject, a change committed while a signing is under way
would either be missing from the signed hash or miss the uncommitted signature: a signature marked
valid whose content no longer matches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction

from signatures import services
from signatures.selectors import verify_signature
from tests.factories import consented
from tests.signatures.conftest import record_event, reload, sign

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("restore_catalogue")]


class Worker(threading.Thread):
    """Runs ``call`` on its own database connection; keeps its result or exception."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.call, self.result, self.error = call, None, None

    def run(self) -> None:
        try:
            self.result = self.call()
        except Exception as exc:  # reported by the test
            self.error = exc
        finally:
            connection.close()


def change_grade(event_id: int, grade: int, *, changed: threading.Event | None = None,
                 release: threading.Event | None = None) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE patients_adverseevent SET grade = %s WHERE id = %s", [grade, event_id])
        if changed and release:
            changed.set()
            assert release.wait(20)


@pytest.fixture
def subject(world: Any) -> Any:
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    record_event(world, subject)
    return subject


def test_signing_waits_for_an_uncommitted_change_and_signs_the_changed_data(world, subject):
    event = subject.adverse_events.get()
    changed, release = threading.Event(), threading.Event()
    changer = Worker(lambda: change_grade(event.pk, 4, changed=changed, release=release))
    changer.start()
    assert changed.wait(20)
    signer = Worker(lambda: sign(world, subject))
    signer.start()
    time.sleep(0.5)
    assert signer.is_alive(), "signing must wait for the change holding the subject"
    release.set()
    for worker in (changer, signer):
        worker.join(30)
        assert not worker.is_alive() and worker.error is None, worker.error
    signature = reload(signer.result)
    assert signature.is_valid
    assert verify_signature(signature).matches


def test_a_change_made_while_signing_invalidates_the_new_signature(world, subject, monkeypatch):
    event = subject.adverse_events.get()
    locked, release = threading.Event(), threading.Event()

    def pause(**kwargs: Any) -> None:  # runs after the signing locked the subject
        locked.set()
        assert release.wait(20)

    monkeypatch.setattr(services, "check_writable", pause)
    signer = Worker(lambda: sign(world, subject))
    signer.start()
    assert locked.wait(20)
    changer = Worker(lambda: change_grade(event.pk, 4))
    changer.start()
    time.sleep(0.5)
    assert changer.is_alive(), "the change must wait for the signing holding the subject"
    release.set()
    for worker in (signer, changer):
        worker.join(30)
        assert not worker.is_alive() and worker.error is None, worker.error
    signature = reload(signer.result)
    assert signature.invalidated_reason == f"patients.AdverseEvent #{event.pk} updated"
    assert not verify_signature(signature).matches
