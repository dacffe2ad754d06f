"""Idempotency-Key: a retried POST or PATCH gets the first response back and writes nothing."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone
from pghistory.models import Context, Events

from assays.models import LabDraw, Result
from idempotency.models import IdempotencyKey
from patients.models import Consent
from tests.api.support import api_client, result_row
from tests.factories import consented, days_ago, screened

pytestmark = pytest.mark.django_db

RESULTS = "/api/v1/results/"


def post(client: Any, url: str, body: Any, key: str | None = "key-1") -> Any:
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return client.post(url, data=json.dumps(body), content_type="application/json", **headers)


def written() -> tuple[int, ...]:
    """Clinical rows and audit rows: a replay must change none of them."""
    return (Result.objects.count(), LabDraw.objects.count(), Consent.objects.count(), Events.objects.count(),
            Context.objects.count())


@pytest.fixture
def subject(world: Any) -> Any:
    return consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)


def test_retried_results_batch_returns_the_first_response_and_writes_nothing(subject, lab):
    body = {"results": [result_row(subject, n) for n in range(3)]}
    first = post(lab, RESULTS, body)
    assert first.status_code == 201, first.json()
    assert first.json() == {"created": 3, "unchanged": 0, "corrected": 0}
    assert "Idempotent-Replayed" not in first
    before = written()
    again = post(lab, RESULTS, body)
    # Without the key this would be a 200 "unchanged: 3"; with it, the very first answer comes back.
    assert (again.status_code, again.json()) == (201, first.json())
    assert again["Idempotent-Replayed"] == "true"
    assert written() == before
    assert IdempotencyKey.objects.count() == 1


def test_retried_consent_returns_the_first_response_and_writes_nothing(world):
    subject = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    client = api_client(world.coordinator)
    url = f"/api/v1/subjects/{subject.code}/consent/"
    body = {"version": "v1", "consented_on": str(days_ago(2)), "age_at_consent": 30}
    first = post(client, url, body)
    assert first.status_code == 200, first.json()
    before = written()
    again = post(client, url, body)
    assert (again.status_code, again.json(), again["Idempotent-Replayed"]) == (200, first.json(), "true")
    assert written() == before and Consent.objects.filter(subject=subject).count() == 1


def test_a_refusal_is_kept_and_replayed_too(world):
    subject = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    client = api_client(world.coordinator)
    url = f"/api/v1/subjects/{subject.code}/consent/"
    body = {"version": "v1", "consented_on": "2999-01-01", "age_at_consent": 30}
    first = post(client, url, body)
    assert first.status_code == 400 and first.json()["code"] == "date_in_future"
    again = post(client, url, body)
    assert (again.status_code, again.json(), again["Idempotent-Replayed"]) == (400, first.json(), "true")
    assert not Consent.objects.exists()


def test_patch_is_honoured(world, subject):
    client = api_client(world.coordinator)
    url = f"/api/v1/subjects/{subject.code}/"
    body = {"marrow_blasts_pct": "40.0", "reason_for_change": "Transcription error"}
    first = client.patch(url, json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY="p-1")
    assert first.status_code == 200, first.json()
    before = written()
    again = client.patch(url, json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY="p-1")
    assert (again.status_code, again.json(), again["Idempotent-Replayed"]) == (200, first.json(), "true")
    assert written() == before


def test_the_same_key_with_another_body_or_path_is_a_409(world, subject, lab):
    assert post(lab, RESULTS, result_row(subject, 1)).status_code == 201
    before = written()
    other_body = post(lab, RESULTS, result_row(subject, 2))
    assert other_body.status_code == 409 and other_body.json()["code"] == "idempotency_key_reused"
    assert set(other_body.json()) == {"code", "message", "field_errors"}
    other_path = post(lab, f"/api/v1/subjects/{subject.code}/consent/",
                      {"version": "v2", "consented_on": str(days_ago(1)), "age_at_consent": 30})
    assert other_path.status_code == 409 and other_path.json()["code"] == "idempotency_key_reused"
    assert written() == before


def test_keys_belong_to_their_user(world, subject, lab):
    session = api_client(world.coordinator)
    url = f"/api/v1/subjects/{subject.code}/consent/"
    consent = {"version": "v2", "consented_on": str(days_ago(1)), "age_at_consent": 30}
    assert post(lab, RESULTS, result_row(subject, 1), key="shared").status_code == 201
    response = post(session, url, consent, key="shared")
    assert response.status_code == 200 and "Idempotent-Replayed" not in response
    assert Result.objects.count() == 1 and Consent.objects.filter(version="v2").count() == 1
    assert IdempotencyKey.objects.filter(key="shared").count() == 2


@pytest.mark.parametrize("key", ["", "   ", "k" * 256])
def test_an_empty_or_overlong_key_is_a_400(subject, lab, key):
    response = post(lab, RESULTS, result_row(subject, 1), key=key)
    assert response.status_code == 400 and response.json()["code"] == "idempotency_key_invalid"
    assert not Result.objects.exists() and not IdempotencyKey.objects.exists()


def test_a_key_of_255_characters_is_accepted(subject, lab):
    assert post(lab, RESULTS, result_row(subject, 1), key="k" * 255).status_code == 201


def test_an_unauthenticated_request_keeps_no_key(subject):
    from rest_framework.test import APIClient

    response = post(APIClient(), RESULTS, result_row(subject, 1))
    assert response.status_code in (401, 403)
    assert not IdempotencyKey.objects.exists()


def test_an_expired_key_is_ignored_and_purged(subject, lab):
    assert post(lab, RESULTS, result_row(subject, 1)).status_code == 201
    IdempotencyKey.objects.update(created_at=timezone.now() - dt.timedelta(hours=25))
    fresh = post(lab, RESULTS, result_row(subject, 2))  # another body: no 409, the old key has expired
    assert fresh.status_code == 201 and "Idempotent-Replayed" not in fresh
    assert Result.objects.count() == 2
    assert post(lab, RESULTS, result_row(subject, 3), key="old").status_code == 201
    IdempotencyKey.objects.filter(key="old").update(created_at=timezone.now() - dt.timedelta(hours=25))
    call_command("purge_idempotency_keys")
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["key-1"]


def test_a_get_ignores_the_key(subject, lab):
    assert lab.get(RESULTS, HTTP_IDEMPOTENCY_KEY="g").status_code == 200
    assert not IdempotencyKey.objects.exists()


def test_the_schema_documents_the_header(client):
    schema = client.get("/api/schema/?format=json").json()
    post_params = schema["paths"]["/api/v1/results/"]["post"]["parameters"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in post_params)
    patch_params = schema["paths"]["/api/v1/subjects/{id}/"]["patch"]["parameters"]
    assert any(p["name"] == "Idempotency-Key" for p in patch_params)
    assert not any(p["name"] == "Idempotency-Key" for p in schema["paths"]["/api/v1/results/"]["get"]["parameters"])
