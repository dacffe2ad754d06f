"""Writes to the trial design that carry rules: service accounts, personal API tokens, and token checks."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from config.db import prepared_rows
from config.errors import PermissionRefused, RuleViolation, StateConflict
from trials.access import access_of, memberships_sql, remember_memberships
from trials.models import Membership, PersonalToken, ServiceAccount, Site, Trial

TOKEN_BYTES = 32
LAST_USED_RESOLUTION_S = 60  # last_used_at is refreshed at most once a minute (no write per request)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_service_account(*, trial: Trial, sites: Iterable[Site], by: User) -> None:
    if not access_of(by).designs(trial.pk):
        raise PermissionRefused("not_permitted", f"Only data managers of {trial.code} issue its service accounts.")
    site_ids = {s.pk for s in sites}
    if not site_ids:
        raise RuleViolation("sites_required", "Bind the account to at least one site.", field="sites")
    active = set(trial.trial_sites.filter(site_id__in=site_ids).values_list("site_id", flat=True))
    if active != site_ids:
        raise RuleViolation("site_not_in_trial", f"Every site must take part in {trial.code}.", field="sites")


@transaction.atomic
def issue_service_account(*, trial: Trial, sites: Iterable[Site], name: str,
                          by: User) -> tuple[ServiceAccount, str]:
    """Create the account and return its token, which is never shown again."""
    sites = list(sites)
    check_service_account(trial=trial, sites=sites, by=by)
    prefix, secret = secrets.token_hex(5), secrets.token_urlsafe(TOKEN_BYTES)
    user = get_user_model().objects.create_user(username=f"svc-{prefix}", first_name=name[:150],
                                                last_name="(service account)")
    user.set_unusable_password()
    user.save(update_fields=["password"])
    account = ServiceAccount.objects.create(name=name, trial=trial, user=user, token_prefix=prefix,
                                            token_hash=hash_token(secret), issued_by=by)
    account.sites.set(sites)
    Membership.objects.bulk_create(Membership(user=user, trial=trial, site=site, role=Membership.Role.SYSTEM)
                                   for site in sites)
    return account, f"{prefix}.{secret}"


@transaction.atomic
def revoke_service_account(*, account: ServiceAccount, by: User) -> ServiceAccount:
    if not access_of(by).designs(account.trial_id):
        raise PermissionRefused("not_permitted", "Only the trial's data managers revoke its service accounts.")
    account = ServiceAccount.objects.select_for_update().get(pk=account.pk)
    if account.revoked_at is not None:
        raise StateConflict("already_revoked", f"{account.name} was revoked on {account.revoked_at:%d %b %Y}.")
    account.revoked_at = timezone.now()
    account.save(update_fields=["revoked_at", "updated_at"])
    Membership.objects.filter(user=account.user).update(active=False)
    account.user.is_active = False
    account.user.save(update_fields=["is_active"])
    return account


Credential = ServiceAccount | PersonalToken


def _active_credential(model: type[Credential], prefix: str,
                       extra: tuple[str, list[Any]] | None = None) -> Credential | None:
    """The unrevoked service account or personal token with this prefix, its (active) user and the user's
    memberships, in one hand-written query (this runs on every API request; the ORM's query compilation
    cost more than the query). ``extra`` is one more SQL column (with its parameters), kept on the
    credential as ``extra``: the token's lockout state (config.lockout.token_locked_sql)."""
    user_model = get_user_model()
    own_fields = [f for f in model._meta.concrete_fields]
    user_fields = [f for f in user_model._meta.concrete_fields]
    columns = [f"a.{f.column}" for f in own_fields] + [f"u.{f.column}" for f in user_fields]
    extra_sql, extra_params = extra or ("NULL", [])
    rows = prepared_rows(f"SELECT {', '.join(columns)}, {memberships_sql('u.id')}, {extra_sql} "
                         f"FROM {model._meta.db_table} a JOIN {user_model._meta.db_table} u ON u.id = a.user_id "
                         f"WHERE a.token_prefix = %s AND a.revoked_at IS NULL AND u.is_active", [*extra_params, prefix])
    if not rows:
        return None
    row = rows[0]
    n, m = len(own_fields), len(own_fields) + len(user_fields)
    credential = model.from_db(connection.alias, [f.attname for f in own_fields], row[:n])
    credential.user = user_model.from_db(connection.alias, [f.attname for f in user_fields], row[n:m])
    remember_memberships(credential.user, row[m] if isinstance(row[m], list) else json.loads(row[m]))
    vars(credential)["extra"] = row[m + 1]
    return credential


def _expired(credential: Credential, now: datetime) -> bool:
    expires_on = getattr(credential, "expires_on", None)
    return expires_on is not None and expires_on < now.date()  # UTC: the server's time zone


def authenticate_token(raw: str, *, extra: tuple[str, list[Any]] | None = None) -> Credential | None:
    """The active service account or personal token a token belongs to, or None (revoked, expired,
    unknown or a wrong secret). Personal tokens' prefixes start with ``p``, service accounts' are
    hexadecimal: the prefix names the one table to look in. Compares hashes in constant time.
    ``extra``: one more SQL column read by the same query (see ``_active_credential``)."""
    prefix, _, secret = raw.partition(".")
    if not prefix or not secret:
        return None
    model = PersonalToken if prefix.startswith(PersonalToken.PREFIX_MARK) else ServiceAccount
    credential = _active_credential(model, prefix, extra)
    if credential is None or not secrets.compare_digest(credential.token_hash, hash_token(secret)):
        return None
    now = timezone.now()
    if _expired(credential, now):
        return None
    if credential.last_used_at is None or (now - credential.last_used_at).total_seconds() > LAST_USED_RESOLUTION_S:
        model.objects.filter(pk=credential.pk).update(last_used_at=now)
        credential.last_used_at = now
    return credential


def token_was_issued(raw: str) -> bool:
    """Whether the token is one that was issued (its secret is right), though now revoked, expired or its
    user inactive: a forgotten system, not someone guessing (config.lockout counts only guesses)."""
    prefix, _, secret = raw.partition(".")
    if not prefix or not secret:
        return False
    model = PersonalToken if prefix.startswith(PersonalToken.PREFIX_MARK) else ServiceAccount
    return model.objects.filter(token_prefix=prefix, token_hash=hash_token(secret)).exists()


# --- personal API tokens -------------------------------------------------------------------------------


def not_a_member(trial_code: str) -> PermissionRefused:
    return PermissionRefused("not_a_member", f"You have no active role in {trial_code}; a personal token acts "
                             "with your own role there, so it could do nothing.", field="trial")


def check_personal_token(*, trial: Trial, expires_on: date | None, by: User) -> None:
    """A person holds a token only for a trial they take part in, and never one that is already expired."""
    if not Membership.objects.filter(user_id=by.pk, trial=trial, active=True).exists():
        raise not_a_member(trial.code)
    if expires_on is not None and expires_on < timezone.now().date():
        raise RuleViolation("expiry_in_past", "The expiry date has passed; choose today or a later day.",
                            field="expires_on")


def check_revoke_personal_token(*, token: PersonalToken, by: User) -> None:
    if token.user_id != by.pk and not access_of(by).designs(token.trial_id):
        raise PermissionRefused("not_permitted", "Only the token's owner or a data manager of the trial "
                                "revokes it.")
    if token.revoked_at is not None:
        raise StateConflict("already_revoked", f"{token.name} was revoked on {token.revoked_at:%d %b %Y}.")


@transaction.atomic
def issue_personal_token(*, trial: Trial, name: str, expires_on: date | None,
                         by: User) -> tuple[PersonalToken, str]:
    """Issue ``by`` a token for ``trial``; returns it with its secret, which is never shown again.

    Callers make sure ``by`` logged in interactively (a session): a token never issues tokens."""
    check_personal_token(trial=trial, expires_on=expires_on, by=by)
    prefix, secret = PersonalToken.PREFIX_MARK + secrets.token_hex(5), secrets.token_urlsafe(TOKEN_BYTES)
    token = PersonalToken(user=by, trial=trial, name=name, expires_on=expires_on, token_prefix=prefix,
                          token_hash=hash_token(secret))
    token.full_clean()
    token.save()
    return token, f"{prefix}.{secret}"


@transaction.atomic
def revoke_personal_token(*, token: PersonalToken, by: User) -> PersonalToken:
    token = PersonalToken.objects.select_for_update(of=("self",)).select_related("trial").get(pk=token.pk)
    check_revoke_personal_token(token=token, by=by)
    token.revoked_at, token.revoked_by = timezone.now(), by
    token.save(update_fields=["revoked_at", "revoked_by", "updated_at"])
    return token
