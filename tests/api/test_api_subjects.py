"""The subject endpoints: same services and scoping as the admin, one error body."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.factories import PASSWORD, consented, days_ago, eligible_subject, screened
from trials.services import issue_service_account, revoke_service_account

pytestmark = pytest.mark.django_db


def api(user):
    client = APIClient()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def token_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_lists_only_own_site_subjects_by_code(world):
    own = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    other = screened(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b)
    response = api(world.coordinator).get("/api/v1/subjects/")
    assert response.status_code == 200
    assert [row["code"] for row in response.json()["results"]] == [own.code]
    assert api(world.coordinator).get(f"/api/v1/subjects/{own.code}/").json()["id"] == own.pk
    missing = api(world.coordinator).get(f"/api/v1/subjects/{other.code}/")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    assert api(world.coordinator).get(f"/api/v1/subjects/{other.pk}/").status_code == 404


def test_enrolment_before_eligibility_is_a_409_with_the_rule_code(world):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    response = api(world.coordinator).post(f"/api/v1/subjects/{subject.code}/enrol/",
                                           {"cohort": "ADULT", "enrolled_on": str(days_ago(1))}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "eligibility_not_confirmed"
    subject.refresh_from_db()
    assert subject.status == "screening"


def test_enrols_through_the_api(world):
    subject = eligible_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                               investigator=world.investigator)
    response = api(world.coordinator).post(f"/api/v1/subjects/{subject.code}/enrol/",
                                           {"cohort": "ADULT", "enrolled_on": str(days_ago(1))}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "enrolled"


def test_future_consent_date_is_a_400_with_field_path(world):
    subject = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    response = api(world.coordinator).post(f"/api/v1/subjects/{subject.code}/consent/",
                                           {"version": "v1", "consented_on": "2999-01-01", "age_at_consent": 30},
                                           format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "date_in_future" and "consented_on" in body["field_errors"]
    assert not subject.consents.exists()


def test_malformed_input_is_a_400_listing_fields(world):
    subject = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    response = api(world.coordinator).post(f"/api/v1/subjects/{subject.code}/consent/",
                                           {"consented_on": "not a date"}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert set(body["field_errors"]) == {"version", "consented_on"}


def test_service_account_token_is_scoped_and_revocable(world):
    own = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    other = screened(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b)
    account, token = issue_service_account(trial=world.trial, sites=[world.site_a], name="SA LIS",
                                           by=world.data_manager)
    assert account.token_hash != token and token.split(".")[1] not in account.token_hash
    client = token_client(token)
    assert [r["code"] for r in client.get("/api/v1/subjects/").json()["results"]] == [own.code]
    assert client.get(f"/api/v1/subjects/{other.code}/").status_code == 404
    account.refresh_from_db()
    assert account.last_used_at is not None
    revoke_service_account(account=account, by=world.data_manager)
    assert token_client(token).get("/api/v1/subjects/").status_code == 401
    assert token_client("bogus.token").get("/api/v1/subjects/").status_code == 401


def test_unauthenticated_is_refused():
    assert APIClient().get("/api/v1/subjects/").status_code in (401, 403)


@pytest.mark.parametrize("rows", [1, 8])
def test_subject_list_queries_do_not_grow(world, rows, django_assert_max_num_queries):
    for _ in range(rows):
        screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    client = api(world.coordinator)
    with django_assert_max_num_queries(6):
        assert len(client.get("/api/v1/subjects/").json()["results"]) == rows


def test_schema_is_valid_and_documents_errors(client):
    from django.core.management import call_command

    call_command("spectacular", "--api-version", "v1", "--validate", "--fail-on-warn", "--file", "/dev/null")
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    enrol = schema.json()["paths"]["/api/v1/subjects/{id}/enrol/"]["post"]["responses"]
    assert {"400", "404", "409"} <= set(enrol)
