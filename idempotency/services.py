"""Claiming an Idempotency-Key for a request, and storing the response it got.

Both run inside the transaction that wraps the request (``idempotency.middleware``): the key row is
inserted first, so a second request with the same key waits on the unique index until the first
commits (then it replays the stored response) or rolls back (then it runs itself); after
``LOCK_WAIT_S`` it is refused with 409 ``idempotency_key_in_use``.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import OperationalError, connection
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from psycopg import errors as pg_errors

from config.errors import StateConflict
from idempotency.models import KEY_LIFETIME, IdempotencyKey

LOCK_WAIT_S = 10  # how long a retry waits for the request holding its key (setting IDEMPOTENCY_LOCK_WAIT_S)


def request_fingerprint(request: HttpRequest) -> str:
    """SHA-256 of the method, the path with its query string, and the body."""
    digest = hashlib.sha256()
    for part in (request.method or "").encode(), request.get_full_path().encode(), request.body:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _insert(*, user_id: int, key: str, fingerprint: str) -> int | None:
    table = IdempotencyKey._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} (user_id, key, request_hash, status_code, content_type, body, "
                       f"created_at) VALUES (%s, %s, %s, 0, '', '', %s) "
                       f"ON CONFLICT (user_id, key) DO NOTHING RETURNING id",
                       [user_id, key, fingerprint, timezone.now()])
        row = cursor.fetchone()
    return None if row is None else row[0]


def _claim_or_find(*, user: AbstractBaseUser, key: str, fingerprint: str) -> IdempotencyKey | None:
    if _insert(user_id=user.pk, key=key, fingerprint=fingerprint) is not None:
        return None
    stored = IdempotencyKey.objects.select_for_update().filter(user_id=user.pk, key=key).first()
    if stored is None:  # purged in between: the key is free again
        return None if _insert(user_id=user.pk, key=key, fingerprint=fingerprint) is not None else stored
    if stored.created_at < timezone.now() - KEY_LIFETIME:  # expired: the key starts afresh
        stored.request_hash, stored.status_code, stored.content_type, stored.body = fingerprint, 0, "", b""
        stored.created_at = timezone.now()
        stored.save()
        return None
    return stored


def claim_key(*, user: AbstractBaseUser, key: str, fingerprint: str) -> IdempotencyKey | None:
    """Claim ``key`` for this request (None: run it) or return the stored response to replay.

    Must run inside the request's transaction. Refusals: 409 ``idempotency_key_reused`` (the key came
    with another method, path or body), 409 ``idempotency_key_in_use`` (its first request still runs).
    """
    wait_ms = int(getattr(settings, "IDEMPOTENCY_LOCK_WAIT_S", LOCK_WAIT_S) * 1000)
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, true)",
                       [f"{wait_ms}ms"])
        previous = cursor.fetchone()[0]
        try:
            stored = _claim_or_find(user=user, key=key, fingerprint=fingerprint)
        except OperationalError as err:
            if isinstance(err.__cause__, pg_errors.LockNotAvailable):
                raise StateConflict("idempotency_key_in_use", "A request with this Idempotency-Key is still "
                                    "being processed; retry later.") from err
            raise
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [previous])
    if stored is not None and stored.request_hash != fingerprint:
        raise StateConflict("idempotency_key_reused", "This Idempotency-Key was used for a different request "
                            "(method, path or body); use a new key for a new request.")
    return stored


def store_response(*, user: AbstractBaseUser, key: str, response: HttpResponse) -> None:
    """Keep the response of the request that claimed ``key`` (same transaction as its writes)."""
    IdempotencyKey.objects.filter(user_id=user.pk, key=key).update(
        status_code=response.status_code, content_type=response.get("Content-Type", ""),
        body=response.content)


def forget_key(*, user: AbstractBaseUser, key: str) -> None:
    """Release a claimed key whose response is not kept (e.g. a streamed or throttled response)."""
    IdempotencyKey.objects.filter(user_id=user.pk, key=key).delete()


def purge_expired_keys() -> int:
    """Delete stored keys older than ``KEY_LIFETIME``; returns how many."""
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=timezone.now() - KEY_LIFETIME).delete()
    return deleted
