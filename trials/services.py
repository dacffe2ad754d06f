"""Writes to the trial design that carry rules: service accounts and their tokens."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from config.errors import PermissionRefused, RuleViolation, StateConflict
from trials.access import access_of
from trials.models import Membership, ServiceAccount, Site, Trial

TOKEN_BYTES = 32
LAST_USED_RESOLUTION_S = 60  # last_used_at is refreshed at most once a minute (no write per request)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_service_account(*, trial: Trial, sites: Iterable[Site], by: AbstractBaseUser) -> None:
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
                          by: AbstractBaseUser) -> tuple[ServiceAccount, str]:
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
def revoke_service_account(*, account: ServiceAccount, by: AbstractBaseUser) -> ServiceAccount:
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


def _active_account(prefix: str) -> ServiceAccount | None:
    """The unrevoked account with this token prefix and its user, in one hand-written query (this runs
    on every laboratory request; the ORM's query compilation cost more than the query)."""
    user_model = get_user_model()
    account_fields = [f for f in ServiceAccount._meta.concrete_fields]
    user_fields = [f for f in user_model._meta.concrete_fields]
    columns = [f"a.{f.column}" for f in account_fields] + [f"u.{f.column}" for f in user_fields]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(columns)} FROM {ServiceAccount._meta.db_table} a "
                       f"JOIN {user_model._meta.db_table} u ON u.id = a.user_id "
                       f"WHERE a.token_prefix = %s AND a.revoked_at IS NULL", [prefix])
        row = cursor.fetchone()
    if row is None:
        return None
    n = len(account_fields)
    account = ServiceAccount.from_db(connection.alias, [f.attname for f in account_fields], row[:n])
    account.user = user_model.from_db(connection.alias, [f.attname for f in user_fields], row[n:])
    return account


def authenticate_token(raw: str) -> ServiceAccount | None:
    """The active account a token belongs to, or None. Compares hashes in constant time."""
    prefix, _, secret = raw.partition(".")
    if not prefix or not secret:
        return None
    account = _active_account(prefix)
    if account is None or not secrets.compare_digest(account.token_hash, hash_token(secret)):
        return None
    now = timezone.now()
    if account.last_used_at is None or (now - account.last_used_at).total_seconds() > LAST_USED_RESOLUTION_S:
        ServiceAccount.objects.filter(pk=account.pk).update(last_used_at=now)
        account.last_used_at = now
    return account
