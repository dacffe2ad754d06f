"""Login throttling (21 CFR 11.300(d)): admin logins, API tokens and signing passwords lock after the limit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from signatures.models import FailedSigningAttempt, Signature
from tests.api.support import token_client
from tests.factories import PASSWORD, UserFactory, consented
from trials.services import issue_service_account, revoke_service_account

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"
SUBJECTS = "/api/v1/subjects/"
SIGN = "/api/v1/signatures/"


def admin_login(username: str, password: str, address: str = "10.0.0.1") -> Any:
    return Client(REMOTE_ADDR=address).post(LOGIN, {"username": username, "password": password})


def logged_in(response: Any) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def fail_logins(username: str, times: int, address: str = "10.0.0.1") -> None:
    for _ in range(times):
        response = admin_login(username, "wrong-password", address)
        assert response.status_code in (200, 429)


def age_attempts(**filters: Any) -> None:
    """Move the attempts back past the cool-off."""
    AccessAttempt.objects.filter(**filters).update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))


@pytest.fixture
def staff(world: Any) -> Any:
    world.coordinator.is_staff = True
    world.coordinator.save()
    return world.coordinator


# --- admin login ----------------------------------------------------------------------------------------


def test_the_right_password_logs_in_after_fewer_failures_than_the_limit(staff):
    fail_logins(staff.username, settings.AXES_FAILURE_LIMIT - 1)
    assert logged_in(admin_login(staff.username, PASSWORD))
    assert not AccessAttempt.objects.filter(username=staff.username).exists()  # reset on success


def test_after_the_limit_the_right_password_is_refused_with_the_lock_named(staff):
    fail_logins(staff.username, settings.AXES_FAILURE_LIMIT)
    response = admin_login(staff.username, PASSWORD)
    assert response.status_code == 429
    assert f"try again in {settings.AXES_COOLOFF_TIME.seconds // 60} minutes" in response.content.decode()
    attempt = AccessAttempt.objects.get(username=staff.username)
    assert attempt.failures_since_start >= settings.AXES_FAILURE_LIMIT
    assert "wrong-password" not in attempt.post_data  # the passwords tried are not kept


def test_the_account_is_locked_from_every_address(staff):
    fail_logins(staff.username, settings.AXES_FAILURE_LIMIT, address="10.0.0.1")
    assert admin_login(staff.username, PASSWORD, address="10.0.0.2").status_code == 429


def test_the_address_is_locked_for_every_account(world, staff):
    fail_logins("nobody-here", settings.AXES_FAILURE_LIMIT, address="10.0.0.9")
    assert admin_login(staff.username, PASSWORD, address="10.0.0.9").status_code == 429
    assert logged_in(admin_login(staff.username, PASSWORD, address="10.0.0.10"))


def test_the_lock_lifts_after_the_cool_off(staff):
    fail_logins(staff.username, settings.AXES_FAILURE_LIMIT)
    age_attempts(username=staff.username)
    assert logged_in(admin_login(staff.username, PASSWORD))


def test_a_reset_unlocks_the_account(staff):
    fail_logins(staff.username, settings.AXES_FAILURE_LIMIT)
    call_command("axes_reset_username", staff.username)
    assert logged_in(admin_login(staff.username, PASSWORD))


def test_data_managers_see_and_delete_the_attempts_other_staff_do_not(world, staff):
    fail_logins("intruder", settings.AXES_FAILURE_LIMIT)
    attempt = AccessAttempt.objects.get(username="intruder")
    world.data_manager.is_staff = True
    world.data_manager.save()
    manager = Client()
    manager.force_login(world.data_manager)
    assert b"intruder" in manager.get("/admin/axes/accessattempt/").content
    response = manager.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not AccessAttempt.objects.filter(pk=attempt.pk).exists()
    other = Client()
    other.force_login(staff)
    assert other.get("/admin/axes/accessattempt/").status_code == 403


def test_superusers_see_the_attempts(db):
    fail_logins("intruder", 1)
    root = Client()
    root.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    assert b"intruder" in root.get("/admin/axes/accessattempt/").content


# --- API tokens -----------------------------------------------------------------------------------------


@pytest.fixture
def lab_token(world: Any) -> str:
    _account, token = issue_service_account(trial=world.trial, sites=[world.site_a], name="Lab A",
                                            by=world.data_manager)
    return token


def wrong(token: str) -> str:
    prefix, _, _secret = token.partition(".")
    return f"{prefix}.not-the-secret"


def get_subjects(token: str, address: str = "10.0.1.1") -> Any:
    return token_client(token).get(SUBJECTS, REMOTE_ADDR=address)


def test_wrong_tokens_are_401_until_the_limit_then_429_even_for_the_right_one(lab_token):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert get_subjects("ffff.wrong").status_code == 401
    response = get_subjects("ffff.wrong")
    assert response.status_code == 429
    assert response.json()["code"] == "too_many_failures"
    assert set(response.json()) == {"code", "message", "field_errors"}
    assert get_subjects(lab_token).status_code == 429
    assert get_subjects(lab_token, address="10.0.1.2").status_code == 200  # another address


def test_wrong_secrets_lock_the_token_prefix_from_every_address(lab_token):
    for n in range(settings.AXES_FAILURE_LIMIT):
        get_subjects(wrong(lab_token), address=f"10.0.2.{n + 1}")
    response = get_subjects(lab_token, address="10.0.3.1")
    assert (response.status_code, response.json()["code"]) == (429, "too_many_failures")


def test_a_token_lock_lifts_after_the_cool_off(lab_token):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        get_subjects("ffff.wrong")
    age_attempts(ip_address="10.0.1.1")
    assert get_subjects(lab_token).status_code == 200


def test_a_revoked_token_retried_is_401_and_locks_nothing(world, lab_token):
    account, old_token = issue_service_account(trial=world.trial, sites=[world.site_a], name="Old LIS",
                                               by=world.data_manager)
    revoke_service_account(account=account, by=world.data_manager)
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):
        assert get_subjects(old_token).status_code == 401
    assert not AccessAttempt.objects.exists()
    assert get_subjects(lab_token).status_code == 200


def test_one_wrong_token_with_an_idempotency_key_counts_once(world):
    response = token_client("ffff.wrong").post(SUBJECTS, {}, format="json", REMOTE_ADDR="10.0.1.1",
                                                HTTP_IDEMPOTENCY_KEY="k-1")
    assert response.status_code == 401
    assert AccessAttempt.objects.get(ip_address="10.0.1.1").failures_since_start == 1


def test_a_valid_token_costs_one_query_for_the_lock(lab_token):
    get_subjects(lab_token)  # last_used_at is written once
    with CaptureQueriesContext(connection) as queries:
        assert get_subjects(lab_token).status_code == 200
    assert sum("axes_accessattempt" in q["sql"] for q in queries.captured_queries) == 1


# --- signing password -----------------------------------------------------------------------------------


@pytest.fixture
def subject(world: Any) -> Any:
    return consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)


@pytest.fixture
def signer(world: Any) -> APIClient:
    """The investigator's session, opened before any failure (a login resets the account's failures)."""
    client = APIClient()
    client.force_login(world.investigator)
    return client


def post_sign(client: APIClient, subject: Any, password: str) -> Any:
    return client.post(SIGN, {"subject": subject.code, "meaning": "approval",
                                                      "password": password}, format="json")


def test_wrong_signing_passwords_lock_signing_and_login(world, subject, signer):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert post_sign(signer, subject, "not-it").json()["code"] == "wrong_password"
    response = post_sign(signer, subject, "not-it")
    assert (response.status_code, response.json()["code"]) == (409, "account_locked")
    response = post_sign(signer, subject, PASSWORD)
    assert (response.status_code, response.json()["code"]) == (409, "account_locked")
    assert "try again in" in response.json()["message"]
    assert not Signature.objects.exists()
    assert FailedSigningAttempt.objects.filter(code="account_locked").count() == 1
    world.investigator.is_staff = True
    world.investigator.save()
    assert admin_login(world.investigator.username, PASSWORD).status_code == 429
    assert not Client().login(username=world.investigator.username, password=PASSWORD)


def test_failed_logins_lock_signing(world, subject, signer):
    fail_logins(world.investigator.username, settings.AXES_FAILURE_LIMIT)
    response = post_sign(signer, subject, PASSWORD)
    assert (response.status_code, response.json()["code"]) == (409, "account_locked")


def test_signing_is_released_after_the_cool_off(world, subject, signer):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        post_sign(signer, subject, "not-it")
    age_attempts(username=world.investigator.username)
    assert post_sign(signer, subject, PASSWORD).status_code == 201


def test_signing_failures_lock_only_their_own_account(world, subject, signer):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        post_sign(signer, subject, "not-it")
    assert AccessAttempt.objects.get(username=world.investigator.username).ip_address is None
    world.coordinator.is_staff = True
    world.coordinator.save()
    assert logged_in(admin_login(world.coordinator.username, PASSWORD))
