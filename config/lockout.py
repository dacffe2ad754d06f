"""Login throttling and lockout (21 CFR 11.300(d)), on django-axes's storage.

Failed admin logins, wrong API tokens and wrong signing passwords are all counted as axes access attempts,
so data managers see them in one place (the admin's "Access attempts"). An account is locked after
``AXES_FAILURE_LIMIT`` failures within ``AXES_COOLOFF_TIME``, counted over logins and signings; a client
address likewise, counted over logins and tokens; a token prefix, over its wrong secrets. The lock lifts
when the cool-off has passed, or when a data manager deletes the attempts (admin or ``axes_reset_username``).

Token requests: a failure is recorded, then the lock is checked. A valid token costs one indexed query
(the failures of its client address and prefix within the cool-off), so a locked address is refused even
with a valid token.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_ip_address, get_cool_off
from axes.models import AccessAttempt
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Q, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

TOKEN_USERNAME = "token:{prefix}"
SIGNING_PATH = "signature"


class LockoutBackend(AxesStandaloneBackend):
    """Axes's lockout check. An authentication without a request (a shell, the test client's ``login``),
    which axes refuses outright, is refused only while the account is locked."""

    def authenticate(self, request: HttpRequest | None, username: str | None = None, password: str | None = None,
                     **kwargs: Any) -> None:
        if request is None:
            if username is not None and account_locked(username):
                raise PermissionDenied(lockout_message())
            return None
        return super().authenticate(request, username, password, **kwargs)


def lockout_parameters(request_or_attempt: Any, credentials: dict[str, Any] | None = None) -> list[str]:
    """Per account and per client address; an attempt without an address (a signing) counts for its
    account only, never with every other attempt that has no address."""
    ip_address = getattr(request_or_attempt, "axes_ip_address", getattr(request_or_attempt, "ip_address", None))
    return ["username", "ip_address"] if ip_address else ["username"]


def cool_off_minutes() -> int:
    return int(get_cool_off().total_seconds() // 60)


def lockout_message() -> str:
    return (f"Locked after {settings.AXES_FAILURE_LIMIT} failed attempts: try again in {cool_off_minutes()} "
            "minutes, or ask a data manager to unlock the account.")


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict[str, Any] | None = None) -> HttpResponse:
    """What a locked-out login gets: the API error shape under /api/, a plain page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"code": "too_many_failures", "message": lockout_message(), "field_errors": {}},
                            status=429)
    return HttpResponse(f"<h1>Login locked</h1><p>{lockout_message()}</p>", status=429)


def _threshold() -> datetime:
    return timezone.now() - get_cool_off()


def record_failure(request: HttpRequest, username: str) -> bool:
    """Count a failed authentication by ``username`` (an account or ``token:<prefix>``) from the request's
    client; True when that locks the account or the address. Leaves the response alone (the caller
    answers in its own shape)."""
    AxesProxyHandler.user_login_failed(sender=__name__, credentials={"username": username}, request=request)
    locked = bool(getattr(request, "axes_locked_out", False))
    request.axes_locked_out = False  # type: ignore[attr-defined]
    return locked


def token_locked(request: HttpRequest, prefix: str) -> bool:
    """Whether the client address or the token prefix is locked: one query on indexed columns."""
    ip_address = get_client_ip_address(request)
    username = TOKEN_USERNAME.format(prefix=prefix)
    by_ip, by_token = Q(ip_address=ip_address), Q(username=username)
    totals = AccessAttempt.objects.filter(by_ip | by_token if ip_address else by_token,
                                          attempt_time__gte=_threshold()).aggregate(
        ip=Sum("failures_since_start", filter=by_ip), token=Sum("failures_since_start", filter=by_token))
    return max(totals["ip"] or 0, totals["token"] or 0) >= settings.AXES_FAILURE_LIMIT


def token_locked_sql(request: HttpRequest, prefix: str) -> tuple[str, list[Any]]:
    """``token_locked`` as an SQL column (and its parameters), read by the token's own query."""
    ip_address = get_client_ip_address(request)
    username = TOKEN_USERNAME.format(prefix=prefix)
    sql = (f"(SELECT greatest(coalesce(sum(t.failures_since_start) FILTER (WHERE t.ip_address = %s), 0), "
           f"coalesce(sum(t.failures_since_start) FILTER (WHERE t.username = %s), 0)) >= %s "
           f"FROM {AccessAttempt._meta.db_table} t "
           f"WHERE (t.ip_address = %s OR t.username = %s) AND t.attempt_time >= %s)")
    return sql, [ip_address, username, settings.AXES_FAILURE_LIMIT, ip_address, username, _threshold()]


def account_locked(username: str) -> bool:
    """Whether the account is locked (failed logins and signings within the cool-off)."""
    total = AccessAttempt.objects.filter(username=username, attempt_time__gte=_threshold()).aggregate(
        n=Sum("failures_since_start"))["n"]
    return (total or 0) >= settings.AXES_FAILURE_LIMIT


def record_signing_failure(username: str) -> bool:
    """Count a wrong signing password against the account, like a failed login; True when that locks it."""
    request = HttpRequest()
    request.META["PATH_INFO"] = SIGNING_PATH
    return record_failure(request, username)


def forwarded_client_ip(request: HttpRequest) -> str | None:
    """Behind the proxy (DJANGO_BEHIND_PROXY): the address it appended to X-Forwarded-For (the right-most;
    the ones before it are the client's own claims)."""
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    return forwarded[-1] if forwarded else request.META.get("REMOTE_ADDR")
