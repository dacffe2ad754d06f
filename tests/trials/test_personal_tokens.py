"""Personal API tokens: the service rules, and the admin page "My API tokens" (issue, secret shown once, revoke)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from config.errors import PermissionRefused, RuleViolation, StateConflict
from tests.factories import build_trial, days_ago
from trials.models import PersonalToken
from trials.services import authenticate_token, hash_token, issue_personal_token, revoke_personal_token

pytestmark = pytest.mark.django_db

ADD = reverse("admin:trials_personaltoken_add")
LIST = reverse("admin:trials_personaltoken_changelist")


def test_a_token_authenticates_as_its_owner_until_revoked(world):
    token, secret = issue_personal_token(trial=world.trial, name="Script", expires_on=None, by=world.coordinator)
    assert token.token_hash == hash_token(secret.split(".", 1)[1]) and secret.split(".", 1)[1] not in token.token_hash
    found = authenticate_token(secret)
    assert isinstance(found, PersonalToken) and found.user.pk == world.coordinator.pk
    revoke_personal_token(token=token, by=world.coordinator)
    assert authenticate_token(secret) is None


def test_an_expired_token_does_not_authenticate(world):
    token, secret = issue_personal_token(trial=world.trial, name="Script", expires_on=days_ago(0), by=world.monitor)
    assert authenticate_token(secret) is not None
    PersonalToken.objects.filter(pk=token.pk).update(expires_on=days_ago(1))
    assert authenticate_token(secret) is None


def test_a_non_member_gets_no_token(world):
    with pytest.raises(PermissionRefused) as err:
        issue_personal_token(trial=build_trial(), name="Script", expires_on=None, by=world.coordinator)
    assert err.value.code == "not_a_member"
    assert not PersonalToken.objects.exists()


def test_an_expiry_in_the_past_is_refused(world):
    with pytest.raises(RuleViolation) as err:
        issue_personal_token(trial=world.trial, name="Script", expires_on=days_ago(1), by=world.coordinator)
    assert (err.value.code, err.value.field) == ("expiry_in_past", "expires_on")


def test_only_the_owner_or_a_data_manager_revokes(world):
    token, _ = issue_personal_token(trial=world.trial, name="Script", expires_on=None, by=world.coordinator)
    with pytest.raises(PermissionRefused) as err:
        revoke_personal_token(token=token, by=world.investigator)
    assert err.value.code == "not_permitted"
    revoke_personal_token(token=token, by=world.data_manager)
    with pytest.raises(StateConflict) as again:
        revoke_personal_token(token=token, by=world.coordinator)
    assert again.value.code == "already_revoked"


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_admin_issues_a_token_and_shows_the_secret_once(world, login):
    client = login(world.investigator)
    page = client.get(ADD)
    assert page.status_code == 200
    assert [t.pk for t in page.context["adminform"].form.fields["trial"].queryset] == [world.trial.pk]
    response = client.post(ADD, {"trial": world.trial.pk, "name": "Eligibility script", "expires_on": ""},
                           follow=True)
    token = PersonalToken.objects.get()
    shown = [m for m in messages_of(response) if token.token_prefix in m]
    assert len(shown) == 1
    secret = shown[0].split(f"{token.token_prefix}.", 1)[1].split(" ", 1)[0]
    assert authenticate_token(f"{token.token_prefix}.{secret}").user.pk == world.investigator.pk
    assert token.user_id == world.investigator.pk
    listing = client.get(LIST)
    assert listing.status_code == 200 and secret not in listing.content.decode()
    assert secret not in client.get(reverse("admin:trials_personaltoken_change", args=[token.pk])).content.decode()


def test_admin_refuses_a_trial_without_a_role(world, login):
    other = build_trial()
    response = login(world.coordinator).post(ADD, {"trial": other.pk, "name": "x", "expires_on": ""})
    assert response.status_code == 200 and response.context["adminform"].form.errors
    assert not PersonalToken.objects.exists()


def test_admin_refuses_an_expiry_in_the_past(world, login):
    response = login(world.coordinator).post(ADD, {"trial": world.trial.pk, "name": "x",
                                                   "expires_on": days_ago(1).isoformat()})
    assert "expires_on" in response.context["adminform"].form.errors
    assert not PersonalToken.objects.exists()


def test_admin_lists_my_tokens_and_revokes_them(world, login):
    mine, _ = issue_personal_token(trial=world.trial, name="Mine", expires_on=None, by=world.coordinator)
    issue_personal_token(trial=world.trial, name="Someone else's", expires_on=None, by=world.investigator)
    client = login(world.coordinator)
    listed = client.get(LIST)
    assert [t.pk for t in listed.context["cl"].result_list] == [mine.pk]
    client.post(LIST, {"action": "revoke", "_selected_action": [mine.pk]}, follow=True)
    mine.refresh_from_db()
    assert mine.revoked_at is not None and mine.revoked_by_id == world.coordinator.pk


def test_admin_data_manager_sees_and_revokes_the_trials_tokens(world, login):
    token, _ = issue_personal_token(trial=world.trial, name="Coordinator's", expires_on=None, by=world.coordinator)
    client = login(world.data_manager)
    assert [t.pk for t in client.get(LIST).context["cl"].result_list] == [token.pk]
    client.post(LIST, {"action": "revoke", "_selected_action": [token.pk]}, follow=True)
    token.refresh_from_db()
    assert token.revoked_by_id == world.data_manager.pk
