"""Two requests with the same Idempotency-Key at the same moment write once (real transactions, two connections)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from assays.models import Result
from idempotency.models import IdempotencyKey
from idempotency.services import claim_key
from patients.models import Consent
from tests.api.support import api_client, result_row, token_client
from tests.concurrency import run_together
from tests.factories import consented, days_ago, screened
from trials.models import ServiceAccount

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("restore_catalogue")]


def post(client: APIClient, url: str, body: Any, key: str = "same-key") -> Any:
    return client.post(url, data=json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY=key)


def assert_one_ran(responses: list[tuple[str, Any]], status: int) -> None:
    assert all(kind == "ok" for kind, _ in responses), responses
    first, second = sorted((r for _, r in responses), key=lambda r: r.has_header("Idempotent-Replayed"))
    assert first.status_code == status, first.content
    assert "Idempotent-Replayed" not in first
    if second.status_code == 409:  # the second gave up waiting
        assert second.json()["code"] == "idempotency_key_in_use"
    else:
        assert (second.status_code, second.json(), second["Idempotent-Replayed"]) == (status, first.json(), "true")


def test_a_double_posted_batch_is_ingested_once(world, lab_token):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    body = {"results": [result_row(subject, n, accession_number=f"ACC-{n // 50}") for n in range(300)]}
    clients = [token_client(lab_token), token_client(lab_token)]
    responses = run_together(*(lambda c=c: post(c, "/api/v1/results/", body) for c in clients))
    assert_one_ran(responses, 201)
    assert Result.objects.count() == 300
    assert IdempotencyKey.objects.count() == 1


def test_a_double_posted_consent_is_recorded_once(world):
    subject = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    url = f"/api/v1/subjects/{subject.code}/consent/"
    body = {"version": "v1", "consented_on": str(days_ago(2)), "age_at_consent": 30}
    clients = [api_client(world.coordinator), api_client(world.coordinator)]
    responses = run_together(*(lambda c=c: post(c, url, body) for c in clients))
    assert_one_ran(responses, 200)
    assert Consent.objects.filter(subject=subject).count() == 1


def test_a_key_held_by_a_running_request_is_409_in_use(world, lab_token, settings):
    """While the first request with a key still runs (its transaction is open), a retry that waits longer
    than IDEMPOTENCY_LOCK_WAIT_S is told so, and writes nothing."""
    settings.IDEMPOTENCY_LOCK_WAIT_S = 0.3
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    account_user = ServiceAccount.objects.get().user
    claimed, release = threading.Event(), threading.Event()

    def hold_the_key() -> None:
        try:
            with transaction.atomic():
                claim_key(user=account_user, key="same-key", fingerprint="0" * 64)
                claimed.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_key)
    holder.start()
    try:
        assert claimed.wait(timeout=30)
        response = post(token_client(lab_token), "/api/v1/results/", result_row(subject, 1))
    finally:
        release.set()
        holder.join(timeout=30)
    assert response.status_code == 409 and response.json()["code"] == "idempotency_key_in_use"
    assert not Result.objects.exists()
