"""GET/POST /api/v1/signatures/: scoped list and detail with the status, and signing with the password."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from locking.services import lock_scope
from signatures.models import FailedSigningAttempt, Signature
from tests.api.support import api_client
from tests.factories import PASSWORD, consented
from tests.signatures.conftest import record_event, sign

pytestmark = pytest.mark.django_db

URL = "/api/v1/signatures/"


def post_sign(client: Any, subject: Any, **overrides: Any) -> Any:
    body = {"subject": subject.code, "meaning": "approval", "password": PASSWORD, **overrides}
    return client.post(URL, body, format="json")


def test_the_investigator_signs_the_casebook(world, subject):
    response = post_sign(api_client(world.investigator), subject, meaning="responsibility")
    assert response.status_code == 201, response.json()
    body = response.json()
    signature = Signature.objects.get()
    assert body == {
        "id": signature.pk, "subject": subject.code, "scope": "casebook", "record_type": None, "record_id": None,
        "meaning": "responsibility", "signer": world.investigator.pk,
        "signer_name": world.investigator.get_full_name(),
        "signed_at": signature.signed_at.isoformat().replace("+00:00", "Z"), "content_hash": signature.content_hash,
        "status": "valid", "invalidated_at": None, "invalidated_reason": "",
    }
    assert "password" not in body


def test_the_investigator_signs_one_form(world, subject):
    event = subject.adverse_events.get()
    response = post_sign(api_client(world.investigator), subject, record_type="patients.adverseevent",
                         record_id=event.pk, meaning="review")
    assert response.status_code == 201, response.json()
    assert (response.json()["scope"], response.json()["record_type"], response.json()["record_id"]) == (
        "form", "patients.adverseevent", event.pk)


def test_the_subject_row_is_signed_as_a_form(world, subject):
    response = post_sign(api_client(world.investigator), subject, record_type="patients.subject",
                         record_id=subject.pk)
    assert response.status_code == 201, response.json()
    assert (response.json()["record_type"], response.json()["record_id"]) == ("patients.subject", subject.pk)


def test_a_wrong_password_is_a_400_on_the_password_field(world, subject):
    response = post_sign(api_client(world.investigator), subject, password="not-it")
    assert response.status_code == 400
    assert response.json() == {"code": "wrong_password", "message": "The password is not correct.",
                               "field_errors": {"password": ["The password is not correct."]}}
    assert not Signature.objects.exists()
    assert FailedSigningAttempt.objects.get().code == "wrong_password"


@pytest.mark.parametrize("role", ["coordinator", "monitor", "data_manager"])
def test_staff_who_are_not_investigators_get_403(world, subject, role):
    response = post_sign(api_client(getattr(world, role)), subject)
    assert response.status_code == 403
    assert response.json()["code"] == "investigator_required"
    assert not Signature.objects.exists()


def test_another_sites_investigator_gets_404(world, subject):
    response = post_sign(api_client(world.investigator_b), subject)
    assert response.status_code == 404
    assert subject.code in response.json()["message"]  # only repeats what the caller sent
    assert not Signature.objects.exists()


def test_a_service_account_token_gets_403(world, subject, lab):
    response = post_sign(lab, subject)
    assert response.status_code == 403
    assert response.json()["code"] == "service_account_cannot_sign"
    assert not Signature.objects.exists()


def test_a_record_of_another_subject_is_a_400_on_record_id(world, subject):
    other = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    others_event = record_event(world, other)
    response = post_sign(api_client(world.investigator), subject, record_type="patients.adverseevent",
                         record_id=others_event.pk)
    assert response.status_code == 400
    assert response.json()["code"] == "no_such_record"
    assert list(response.json()["field_errors"]) == ["record_id"]


@pytest.mark.parametrize("body, field", [
    ({"record_type": "patients.adverseevent"}, "record_id"),
    ({"record_id": 1}, "record_type"),
    ({"record_type": "patients.crsassessment", "record_id": 1}, "record_type"),  # a part, not a form
    ({"meaning": "authorship"}, "meaning"),
    ({"password": None}, "password"),
])
def test_malformed_requests_are_400_with_the_field(world, subject, body, field):
    response = post_sign(api_client(world.investigator), subject, **body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert field in response.json()["field_errors"]


# --- reading: status, filters, scope, query count ------------------------------------------------


@pytest.fixture
def signed(world: Any, subject: Any) -> tuple[Signature, Signature]:
    form = sign(world, subject, record=subject.adverse_events.get())
    casebook = sign(world, subject)
    record_event(world, subject, term="Nausea", grade=1)  # invalidates the casebook signature only
    return form, casebook


def test_the_list_shows_the_invalidation(world, subject, signed):
    form, casebook = signed
    rows = {row["id"]: row for row in api_client(world.monitor).get(URL).json()["results"]}
    assert rows[form.pk]["status"] == "valid" and rows[form.pk]["invalidated_at"] is None
    assert rows[casebook.pk]["status"] == "invalid"
    assert rows[casebook.pk]["invalidated_at"] is not None
    assert rows[casebook.pk]["invalidated_reason"].startswith("patients.AdverseEvent #")


def test_the_list_filters_by_subject_code_and_validity(world, subject, signed):
    other = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    sign(world, other)
    client = api_client(world.coordinator)
    assert client.get(URL).json()["count"] == 3
    assert {r["subject"] for r in client.get(URL, {"subject": subject.code}).json()["results"]} == {subject.code}
    assert client.get(URL, {"subject": subject.code}).json()["count"] == 2
    assert [r["id"] for r in client.get(URL, {"valid": "false"}).json()["results"]] == [signed[1].pk]
    assert client.get(URL, {"valid": "true"}).json()["count"] == 2


def test_the_list_is_newest_first_and_paginated(world, subject, signed):
    body = api_client(world.coordinator).get(URL, {"page_size": 1}).json()
    assert body["count"] == 2 and body["next"] and [r["id"] for r in body["results"]] == [signed[1].pk]


def test_the_detail_rechecks_the_content(world, subject, signed):
    client = api_client(world.monitor)
    form, casebook = signed
    assert client.get(f"{URL}{form.pk}/").json()["content_matches"] is True
    detail = client.get(f"{URL}{casebook.pk}/").json()
    assert (detail["status"], detail["content_matches"]) == ("invalid", False)


def test_another_sites_staff_see_nothing(world, subject, signed):
    client = api_client(world.investigator_b)
    assert client.get(URL).json()["count"] == 0
    assert client.get(f"{URL}{signed[0].pk}/").status_code == 404


def test_a_laboratory_token_reads_its_sites_signatures(world, subject, signed, lab):
    assert lab.get(URL).json()["count"] == 2


def test_list_query_count_does_not_grow_with_rows(world, subject):
    client = api_client(world.monitor)
    sign(world, subject)
    client.get(URL)  # warm per-process caches

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(URL).status_code == 200
        return len(ctx.captured_queries)

    one = count()
    for _ in range(9):
        other = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
        sign(world, other, record=other)
    record_event(world, subject)
    assert count() == one


def test_a_database_lock_is_a_409(world, subject):
    lock_scope(trial=world.trial, level="lock", reason="Final database lock", by=world.data_manager, subject=subject)
    response = post_sign(api_client(world.investigator), subject)
    assert response.status_code == 409
    assert response.json()["code"] == "data_locked"
    assert not Signature.objects.exists()
