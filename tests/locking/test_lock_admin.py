"""Data locks in the admin: locked data refuse admin writes with the lock's description; data managers lock
and release through forms whose refusals appear on the right field; everyone else only reads, within scope."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from django.utils.html import escape

from locking.models import Lock, LockEvent
from patients.models import AdverseEvent, BodyMeasurement, Subject
from tests.admin_forms import form_values
from tests.factories import days_ago
from tests.locking.support import REASON, lock, site_a_subject, site_b_subject

pytestmark = pytest.mark.django_db

ADD = "admin:locking_lock_add"


def release_url(taken: Lock) -> str:
    return reverse("admin:locking_lock_release", args=[taken.pk])


def form_errors(response: Any) -> dict[str, list[str]]:
    form = response.context["adminform"].form if "adminform" in response.context else response.context["form"]
    return form.errors


# --- locked data refuse admin writes -----------------------------------------------------------------


def test_subject_action_on_a_locked_subject_shows_the_lock_and_saves_nothing(world, login):
    subject = site_a_subject(world)
    lock(world, subject=subject)
    response = login(world.coordinator).post(
        reverse("admin:patients_subject_action", args=[subject.pk, "measurement"]),
        {"measured_on": str(days_ago(5)), "height_cm": "170", "weight_kg": "70", "_save": "Save"})
    assert response.status_code == 200
    [message] = response.context["form"].non_field_errors()
    assert message.startswith(f"Subject {subject.code} of {world.trial.code} is locked (database lock)")
    assert REASON in message and escape(message) in response.content.decode()
    assert not BodyMeasurement.objects.exists()


def test_screening_at_a_frozen_site_is_refused_on_the_form(world, login):
    lock(world, level="freeze", site=world.site_a)
    client = login(world.coordinator)
    data = form_values(client.get(reverse("admin:patients_subject_add")).context["adminform"].form)
    data.update({"trial": world.trial.pk, "site": world.site_a.pk, "screened_on": str(days_ago(3)), "sex": "F",
                 "diagnosis": "b_all", "marrow_blasts_pct": "35"})
    response = client.post(reverse("admin:patients_subject_add"), data)
    assert response.status_code == 200
    [message] = form_errors(response)["__all__"]
    assert message.startswith(f"Site {world.site_a.code} of {world.trial.code} is frozen")
    assert not Subject.objects.exists()


def test_adverse_event_add_form_under_a_lock_writes_nothing(world, login):
    """The add form checks the lock in clean(): the refusal names the lock on the form, and nothing is written."""
    subject = site_a_subject(world)
    lock(world, subject=subject)
    client = login(world.coordinator)
    response = client.post(reverse("admin:patients_adverseevent_add"), {
        "subject": subject.pk, "category": "ctcae", "term": "Nausea", "grade": "2", "onset_on": str(days_ago(2)),
        "related_to_product": "possible", "related_to_lymphodepletion": "unlikely", "outcome": "not_recovered",
        "action_taken": "none"})
    assert response.status_code == 200
    assert "is locked (database lock)" in str(form_errors(response))
    assert not AdverseEvent.objects.exists()


# --- locking through the admin -----------------------------------------------------------------------


def test_data_manager_locks_a_subject_through_the_admin(world, login):
    subject = site_a_subject(world)
    client = login(world.data_manager)
    page = client.get(reverse(ADD))
    assert page.status_code == 200
    assert list(page.context["adminform"].form.fields) == ["trial", "site", "subject", "level", "reason"]
    response = client.post(reverse(ADD), {
        "trial": world.trial.pk, "subject": subject.pk, "level": "lock", "reason": REASON})
    assert response.status_code == 302, form_errors(response)
    taken = Lock.objects.get()
    assert (taken.subject, taken.site, taken.level, taken.locked_by) == (subject, world.site_a, "lock",
                                                                          world.data_manager)
    assert LockEvent.objects.get(pgh_obj=taken).pgh_context.metadata["reason"] == REASON


def test_lock_form_refusals_appear_on_their_fields(world, login):
    at_b = site_b_subject(world)
    client = login(world.data_manager)
    wrong_site = client.post(reverse(ADD), {"trial": world.trial.pk, "site": world.site_a.pk, "subject": at_b.pk,
                                            "level": "lock", "reason": REASON})
    assert form_errors(wrong_site)["subject"] == [f"{at_b.code} is not a subject of site {world.site_a.code}."]
    assert "reason" in form_errors(client.post(reverse(ADD), {"trial": world.trial.pk, "level": "lock",
                                                              "reason": " "}))
    lock(world, site=world.site_b)
    again = client.post(reverse(ADD), {"trial": world.trial.pk, "site": world.site_b.pk, "level": "freeze",
                                       "reason": REASON})
    [message] = form_errors(again)["__all__"]
    assert message.startswith(f"Site {world.site_b.code} of {world.trial.code} is locked")
    assert Lock.objects.count() == 1


def test_others_read_the_locks_of_their_scope_but_may_not_lock(world, login):
    at_b = site_b_subject(world)
    trial_lock, site_lock, subject_lock = lock(world, level="freeze"), lock(world, site=world.site_a), lock(
        world, subject=at_b)
    client = login(world.coordinator)
    assert client.get(reverse(ADD)).status_code == 403
    listed = client.get(reverse("admin:locking_lock_changelist"))
    assert listed.status_code == 200
    assert {obj.pk for obj in listed.context["cl"].result_list} == {trial_lock.pk, site_lock.pk}
    assert "/release/" not in listed.content.decode()
    assert client.get(reverse("admin:locking_lock_change", args=[site_lock.pk])).status_code == 200
    assert client.get(reverse("admin:locking_lock_change", args=[subject_lock.pk])).status_code == 404
    assert client.post(release_url(site_lock), {"reason": "Please"}).status_code == 403
    assert client.post(release_url(subject_lock), {"reason": "Please"}).status_code == 404
    site_lock.refresh_from_db()
    assert site_lock.active


def test_data_manager_releases_with_a_reason(world, login):
    taken = lock(world, site=world.site_a)
    client = login(world.data_manager)
    assert release_url(taken) in client.get(reverse("admin:locking_lock_changelist")).content.decode()
    assert release_url(taken) in client.get(reverse("admin:locking_lock_change", args=[taken.pk])).content.decode()
    page = client.get(release_url(taken))
    assert page.status_code == 200 and REASON in page.content.decode()
    blank = client.post(release_url(taken), {"reason": ""})
    assert blank.status_code == 200
    assert blank.context["form"].errors == {"reason": ["Give the reason for releasing the lock."]}
    taken.refresh_from_db()
    assert taken.active
    done = client.post(release_url(taken), {"reason": "Re-opened for corrections"})
    assert done.status_code == 302
    taken.refresh_from_db()
    assert (taken.active, taken.released_by, taken.release_reason) == (False, world.data_manager,
                                                                        "Re-opened for corrections")
    again = client.post(release_url(taken), {"reason": "Twice"})
    assert again.status_code == 200 and again.context["form"].non_field_errors()
