"""Personal API tokens: a person issues one for a trial (password login only) and acts through it with their
own role and sites in that trial, and nothing of any other trial."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from patients.models import Consent, Subject, SubjectStatus
from signatures.models import Signature
from tests.api.support import api_client, token_client
from tests.factories import (
    PASSWORD,
    MembershipFactory,
    TrialSiteFactory,
    UserFactory,
    assessed,
    build_trial,
    consented,
    days_ago,
    screened,
)
from trials.models import Membership, PersonalToken

pytestmark = pytest.mark.django_db

URL = "/api/v1/personal-tokens/"
R = Membership.Role


def issue(user: Any, trial: Any, **overrides: Any) -> Any:
    return api_client(user).post(URL, {"trial": trial.code, "name": "Screening script", **overrides}, format="json")


def token_of(user: Any, trial: Any, **overrides: Any) -> str:
    response = issue(user, trial, **overrides)
    assert response.status_code == 201, response.json()
    return response.json()["token"]


def consent_body() -> dict[str, Any]:
    return {"version": "v1.1", "consented_on": days_ago(28).isoformat(), "age_at_consent": 30}


def test_issuing_returns_the_secret_once_and_stores_only_its_hash(world):
    response = issue(world.coordinator, world.trial, expires_on=days_ago(-30).isoformat())
    assert response.status_code == 201, response.json()
    body = response.json()
    token = PersonalToken.objects.get()
    assert body["token"].startswith(f"{token.token_prefix}.") and token.token_prefix.startswith("p")
    assert (body["trial"], body["user"], body["name"], body["expires_on"]) == (
        world.trial.code, world.coordinator.username, "Screening script", days_ago(-30).isoformat())
    secret = body["token"].split(".", 1)[1]
    assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    with connection.cursor() as cursor:  # the secret is in no column of the row
        cursor.execute(f"SELECT * FROM {PersonalToken._meta.db_table}")
        assert not any(secret in str(value) for value in cursor.fetchone())
    listed = api_client(world.coordinator).get(URL).json()["results"]
    assert [row["id"] for row in listed] == [token.pk] and "token" not in listed[0]


def test_investigator_token_confirms_eligibility(world):
    subject, assessment = assessed(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    client = token_client(token_of(world.investigator, world.trial))
    response = client.post(f"/api/v1/subjects/{subject.code}/confirm-eligibility/", {}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == SubjectStatus.ELIGIBLE
    assessment.refresh_from_db()
    assert assessment.confirmed_by_id == world.investigator.pk  # the person, not a system account
    assert PersonalToken.objects.get().last_used_at is not None


def test_coordinator_token_records_consent(world):
    subject = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    client = token_client(token_of(world.coordinator, world.trial))
    response = client.post(f"/api/v1/subjects/{subject.code}/consent/", consent_body(), format="json")
    assert response.status_code == 200, response.json()
    consent = Consent.objects.get(subject=subject)
    assert consent.version == "v1.1" and consent.recorded_by_id == world.coordinator.pk


def test_token_keeps_the_owners_sites(world):
    other_site = consented(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b)
    client = token_client(token_of(world.coordinator, world.trial))
    assert client.get(f"/api/v1/subjects/{other_site.code}/").status_code == 404


def test_monitor_token_is_still_read_only(world):
    subject = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    client = token_client(token_of(world.monitor, world.trial))
    assert client.get(f"/api/v1/subjects/{subject.code}/").status_code == 200
    response = client.post(f"/api/v1/subjects/{subject.code}/consent/", consent_body(), format="json")
    assert response.status_code == 403 and response.json()["code"] == "not_permitted"
    assert not Consent.objects.exists()


@pytest.fixture
def trial_y(world: Any) -> Any:
    """A second trial at site A, where site A's coordinator also works."""
    trial = build_trial()
    TrialSiteFactory(trial=trial, site=world.site_a)
    MembershipFactory(user=world.coordinator, trial=trial, site=world.site_a, role=R.COORDINATOR)
    return trial


def test_token_of_one_trial_sees_nothing_of_another(world, trial_y):
    mine = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    elsewhere = screened(trial=trial_y, site=world.site_a, coordinator=world.coordinator)
    session = api_client(world.coordinator)
    assert {s["id"] for s in session.get("/api/v1/subjects/").json()["results"]} == {mine.pk, elsewhere.pk}
    client = token_client(token_of(world.coordinator, world.trial))
    assert [s["id"] for s in client.get("/api/v1/subjects/").json()["results"]] == [mine.pk]
    assert client.get(f"/api/v1/subjects/{elsewhere.pk}/").status_code == 404
    response = client.post(f"/api/v1/subjects/{elsewhere.pk}/consent/", consent_body(), format="json")
    assert response.status_code == 404
    screening = {"trial": trial_y.code, "site": world.site_a.code, "screened_on": days_ago(1).isoformat(),
                 "sex": "female", "diagnosis": "b_all", "marrow_blasts_pct": "35"}
    assert client.post("/api/v1/subjects/", screening, format="json").status_code in (400, 403, 404)
    assert not Consent.objects.exists() and Subject.objects.count() == 2


def test_superusers_token_is_confined_to_its_trial_too(world, trial_y):
    boss = UserFactory(is_superuser=True)
    MembershipFactory(user=boss, trial=world.trial, site=None, role=R.DATA_MANAGER)
    mine = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    screened(trial=trial_y, site=world.site_a, coordinator=world.coordinator)
    client = token_client(token_of(boss, world.trial))
    assert [s["id"] for s in client.get("/api/v1/subjects/").json()["results"]] == [mine.pk]


def test_revoked_and_expired_tokens_are_401(world):
    subject = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    revoked, expired = token_of(world.coordinator, world.trial), token_of(world.coordinator, world.trial)
    revoked_row, expired_row = PersonalToken.objects.order_by("pk")
    assert api_client(world.coordinator).post(f"{URL}{revoked_row.pk}/revoke/").status_code == 200
    PersonalToken.objects.filter(pk=expired_row.pk).update(expires_on=days_ago(1))
    for token in (revoked, expired):
        client = token_client(token)
        assert client.get("/api/v1/subjects/").status_code == 401
        response = client.post(f"/api/v1/subjects/{subject.code}/consent/", consent_body(), format="json")
        assert response.status_code == 401
    assert not Consent.objects.exists()


def test_a_token_expiring_today_still_works(world):
    client = token_client(token_of(world.coordinator, world.trial, expires_on=days_ago(0).isoformat()))
    assert client.get("/api/v1/subjects/").status_code == 200


def test_wrong_secret_is_401(world):
    token = token_of(world.coordinator, world.trial)
    assert token_client(f"{token.split('.')[0]}.not-the-secret").get("/api/v1/subjects/").status_code == 401


def test_a_token_cannot_issue_or_revoke_tokens(world):
    client = token_client(token_of(world.coordinator, world.trial))
    response = client.post(URL, {"trial": world.trial.code, "name": "Another"}, format="json")
    assert response.status_code == 403 and response.json()["code"] == "session_required"
    response = client.post(f"{URL}{PersonalToken.objects.get().pk}/revoke/")
    assert response.status_code == 403 and response.json()["code"] == "session_required"
    assert PersonalToken.objects.count() == 1 and PersonalToken.objects.get().revoked_at is None


@pytest.mark.parametrize("trial_code", ["member_elsewhere", "NO-SUCH-TRIAL"])
def test_a_user_without_a_role_in_the_trial_is_refused(world, trial_code):
    other = build_trial()
    code = other.code if trial_code == "member_elsewhere" else trial_code
    response = api_client(world.coordinator).post(URL, {"trial": code, "name": "x"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "not_a_member" and "trial" in response.json()["field_errors"]
    assert not PersonalToken.objects.exists()


def test_an_expiry_in_the_past_is_refused(world):
    response = issue(world.coordinator, world.trial, expires_on=days_ago(1).isoformat())
    assert response.status_code == 400
    assert response.json()["code"] == "expiry_in_past" and "expires_on" in response.json()["field_errors"]
    assert not PersonalToken.objects.exists()


def test_revocation_by_the_owner_a_data_manager_but_no_one_else(world):
    token_of(world.coordinator, world.trial)
    token = PersonalToken.objects.get()
    assert api_client(world.coordinator_b).post(f"{URL}{token.pk}/revoke/").status_code == 404
    response = api_client(world.data_manager).post(f"{URL}{token.pk}/revoke/")
    assert response.status_code == 200 and response.json()["revoked_at"]
    token.refresh_from_db()
    assert token.revoked_by_id == world.data_manager.pk
    again = api_client(world.coordinator).post(f"{URL}{token.pk}/revoke/")
    assert again.status_code == 409 and again.json()["code"] == "already_revoked"


def test_the_list_shows_only_my_tokens(world):
    token_of(world.coordinator, world.trial)
    token_of(world.investigator, world.trial)
    rows = api_client(world.coordinator).get(URL).json()["results"]
    assert [r["user"] for r in rows] == [world.coordinator.username]


@pytest.mark.parametrize("count", [1, 5])
def test_listing_tokens_costs_the_same_queries_for_1_and_5(world, count):
    for n in range(count):
        token_of(world.coordinator, world.trial, name=f"Script {n}")
    client = api_client(world.coordinator)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(URL)
    assert response.status_code == 200 and len(response.json()["results"]) == count
    assert len(queries) == 4  # session, user, count, page


def test_signing_through_a_token_still_needs_the_password(world):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    client = token_client(token_of(world.investigator, world.trial))
    missing = client.post("/api/v1/signatures/", {"subject": subject.code, "meaning": "approval"}, format="json")
    assert missing.status_code == 400 and "password" in missing.json()["field_errors"]
    wrong = client.post("/api/v1/signatures/", {"subject": subject.code, "meaning": "approval",
                                                "password": "not-it"}, format="json")
    assert wrong.status_code == 400 and wrong.json()["code"] == "wrong_password"
    assert not Signature.objects.exists()
    signed = client.post("/api/v1/signatures/", {"subject": subject.code, "meaning": "approval",
                                                 "password": PASSWORD}, format="json")
    assert signed.status_code == 201, signed.json()
    assert Signature.objects.get().signer_id == world.investigator.pk


def test_issuing_and_revoking_are_audited(world):
    from pghistory.models import Events

    token_of(world.coordinator, world.trial)
    token = PersonalToken.objects.get()
    api_client(world.coordinator).post(f"{URL}{token.pk}/revoke/")
    labels = list(Events.objects.tracks(token).order_by("pgh_created_at").values_list("pgh_label", flat=True))
    assert labels[0] == "insert" and "update" in labels


def test_a_new_tokens_secret_is_not_kept_by_the_idempotency_store(world):
    from idempotency.models import IdempotencyKey

    client = api_client(world.coordinator)
    response = client.post(URL, {"trial": world.trial.code, "name": "Script"}, format="json",
                           HTTP_IDEMPOTENCY_KEY="issue-1")
    assert response.status_code == 201 and response["Cache-Control"] == "no-store"
    secret = response.json()["token"].split(".", 1)[1]
    assert not any(secret.encode() in bytes(row.body) for row in IdempotencyKey.objects.all())
    assert not IdempotencyKey.objects.exists()
