"""Signatures in the admin: scoped list with a visible status, the subject page's list, and the signing page."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from locking.services import lock_scope
from patients.models import Subject
from signatures.models import FailedSigningAttempt, Signature
from tests.admin_forms import change_form_data
from tests.factories import PASSWORD, consented
from tests.signatures.conftest import record_event, sign

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:signatures_signature_changelist"
SIGN = "admin:signatures_signature_add"


def html(response: Any) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def subject_page(subject: Subject) -> str:
    return reverse("admin:patients_subject_change", args=[subject.pk])


@pytest.fixture
def signed(world: Any, subject: Subject) -> tuple[Signature, Signature]:
    """A form signature of the subject's adverse event (stays valid) and a casebook signature that a later
    adverse event invalidates."""
    form = sign(world, subject, record=subject.adverse_events.get(), meaning="review")
    casebook = sign(world, subject, meaning="responsibility")
    record_event(world, subject, term="Nausea", grade=1)
    return form, casebook


# --- the list and the subject page show the status --------------------------------------------------


@pytest.mark.parametrize("role", ["investigator", "coordinator", "monitor", "data_manager"])
def test_the_changelist_shows_valid_and_invalid_signatures(world, subject, signed, login, role):
    page = html(login(getattr(world, role)).get(reverse(CHANGELIST)))
    assert page.count('class="signature-status signature-valid"') == 1
    assert page.count('class="signature-status signature-invalid"') == 1
    assert "Invalid — changed since signed" in page
    assert "patients.AdverseEvent #" in page and " inserted" in page  # the reason
    assert world.investigator.get_full_name() in page
    assert "Responsibility" in page and "Review" in page


def test_the_subject_pages_state_counts_the_valid_and_invalidated_signatures_it_lists(world, subject, signed, login):
    page = html(login(world.coordinator).get(subject_page(subject)))
    assert "Signatures: 1 valid, 1 invalidated by later changes" in page
    assert page.count('class="field-signed_at"') == 2  # the list below shows the same two


def test_the_changelist_filters_by_status(world, subject, signed, login):
    page = html(login(world.investigator).get(reverse(CHANGELIST), {"valid": "no"}))
    assert "signature-invalid" in page and "signature-valid" not in page


def test_another_sites_staff_see_no_signature_and_get_404(world, subject, signed, login):
    client = login(world.investigator_b)
    page = html(client.get(reverse(CHANGELIST)))
    assert subject.code not in page and "signature-status" not in page
    response = client.get(reverse("admin:signatures_signature_change", args=[signed[0].pk]))
    assert response.status_code == 404


def test_the_detail_page_rechecks_the_signed_content(world, subject, signed, login):
    client = login(world.monitor)
    form, casebook = signed
    assert "Matches the signed content." in html(client.get(
        reverse("admin:signatures_signature_change", args=[form.pk])))
    page = html(client.get(reverse("admin:signatures_signature_change", args=[casebook.pk])))
    assert "Differs from the signed content" in page and "Invalid — changed since signed" in page


def test_the_subject_page_lists_its_signatures_with_their_status(world, subject, signed, login):
    page = html(login(world.coordinator).get(subject_page(subject)))
    assert 'id="signatures-group"' in page
    assert "signature-valid" in page and "Invalid — changed since signed" in page
    assert "Sign this subject" not in page  # coordinators do not sign


def test_the_subject_page_offers_signing_to_its_investigator(world, subject, login):
    page = html(login(world.investigator).get(subject_page(subject)))
    assert f"{reverse(SIGN)}?subject={subject.pk}" in page


def test_the_subject_page_still_saves_without_the_signature_lists_form_data(world, subject, login):
    """The signatures inline is display-only: posts that do not carry it (older clients, tests) still save."""
    signature = sign(world, subject)
    client = login(world.coordinator)
    data = change_form_data(client.get(subject_page(subject)), prior_lines="4", reason_for_change="Source check")
    data = {key: value for key, value in data.items() if not key.startswith("signatures-")}
    response = client.post(subject_page(subject), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    subject.refresh_from_db()
    assert subject.prior_lines == 4
    assert not Signature.objects.get(pk=signature.pk).is_valid


def test_changelist_query_count_does_not_grow_with_rows(world, subject, login):
    client = login(world.monitor)
    sign(world, subject)
    client.get(reverse(CHANGELIST))  # warm per-process caches

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse(CHANGELIST)).status_code == 200
        return len(ctx.captured_queries)

    one = count()
    for _ in range(9):
        other = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
        sign(world, other, record=other)
    record_event(world, subject)  # some of them invalid
    assert count() == one


# --- the signing page --------------------------------------------------------------------------------


def test_the_investigator_signs_the_casebook_with_the_password(world, subject, login):
    client = login(world.investigator)
    step1 = html(client.get(reverse(SIGN)))
    assert subject.code in step1
    step2 = html(client.get(reverse(SIGN), {"subject": subject.pk}))
    assert "Febrile neutropenia" in step2  # the subject's forms are offered
    response = client.post(f"{reverse(SIGN)}?subject={subject.pk}",
                           {"subject": subject.pk, "record": "", "meaning": "approval", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == subject_page(subject)
    signature = Signature.objects.get()
    assert (signature.scope, signature.meaning, signature.signer) == ("casebook", "approval", world.investigator)


def test_the_investigator_signs_one_form(world, subject, login):
    event = subject.adverse_events.get()
    response = login(world.investigator).post(reverse(SIGN), {
        "subject": subject.pk, "record": f"patients.adverseevent:{event.pk}", "meaning": "review",
        "password": PASSWORD})
    assert response.status_code == 302
    signature = Signature.objects.get()
    assert (signature.scope, signature.record_id) == ("form", event.pk)


def test_a_wrong_password_is_shown_on_the_password_field(world, subject, login):
    response = login(world.investigator).post(reverse(SIGN), {
        "subject": subject.pk, "record": "", "meaning": "approval", "password": "wrong-password"})
    assert response.status_code == 200
    assert response.context["form"].errors == {"password": ["The password is not correct."]}
    assert "wrong-password" not in response.content.decode()
    assert not Signature.objects.exists()
    assert FailedSigningAttempt.objects.get().code == "wrong_password"


def test_another_sites_investigator_is_not_offered_the_subject(world, subject, login):
    client = login(world.investigator_b)
    assert subject.code not in html(client.get(reverse(SIGN)))
    response = client.post(reverse(SIGN), {"subject": subject.pk, "record": "", "meaning": "approval",
                                           "password": PASSWORD})
    assert response.status_code == 200
    assert list(response.context["form"].errors) == ["subject"]
    assert not Signature.objects.exists()


def test_a_form_of_another_subject_is_refused_on_the_form_field(world, subject, login):
    other = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    response = login(world.investigator).post(reverse(SIGN), {
        "subject": subject.pk, "record": f"patients.subject:{other.pk}", "meaning": "approval", "password": PASSWORD})
    assert response.status_code == 200
    assert list(response.context["form"].errors) == ["record"]
    assert not Signature.objects.exists()


@pytest.mark.parametrize("role", ["coordinator", "monitor", "data_manager"])
def test_only_investigators_open_the_signing_page(world, subject, login, role):
    client = login(getattr(world, role))
    assert client.get(reverse(SIGN)).status_code == 403
    assert client.post(reverse(SIGN), {"subject": subject.pk, "meaning": "approval",
                                       "password": PASSWORD}).status_code == 403
    assert not Signature.objects.exists()


def test_history_pages_of_another_sites_signatures_are_404(world, subject, signed, login):
    client = login(world.investigator_b)
    assert client.get(reverse("admin:signatures_signature_history", args=[signed[0].pk])).status_code == 404
    assert login(world.monitor).get(
        reverse("admin:signatures_signature_history", args=[signed[0].pk])).status_code == 200


def test_refused_signings_are_listed_for_the_trials_data_managers(world, subject, login):
    login(world.investigator).post(reverse(SIGN), {"subject": subject.pk, "record": "", "meaning": "approval",
                                                   "password": "guess-1"})
    url = reverse("admin:signatures_failedsigningattempt_changelist")
    page = html(login(world.data_manager).get(url))
    assert "wrong_password" in page and subject.code in page
    assert login(world.coordinator).get(url).status_code == 403


def test_a_database_lock_is_shown_above_the_signing_form(world, subject, login):
    lock_scope(trial=world.trial, level="lock", reason="Final database lock", by=world.data_manager, subject=subject)
    response = login(world.investigator).post(reverse(SIGN), {
        "subject": subject.pk, "record": "", "meaning": "approval", "password": PASSWORD})
    assert response.status_code == 200
    assert response.context["form"].non_field_errors()
    assert "errornote" in response.content.decode()
    assert not Signature.objects.exists()
