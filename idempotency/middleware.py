"""Safe retries for the API: every POST and PATCH under /api/ honours an ``Idempotency-Key`` header.

The first response to a key (2xx or 4xx) is stored with the caller and a hash of the request; a retry
with the same key and request gets that response again, with ``Idempotent-Replayed: true``, and writes
nothing. An answer marked ``Cache-Control: no-store`` (it carries a secret) is not stored, so its retry
runs again. The key row and the request's writes share one transaction (services' own transactions
become savepoints of it), so they commit together or not at all; a 5xx rolls both back. Keys belong
to the authenticated caller: two users may use the same key.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.settings import api_settings

from config.api import error_body
from config.errors import DomainError
from idempotency import services
from idempotency.models import MAX_KEY_LENGTH, IdempotencyKey

HEADER = "Idempotency-Key"
METHODS = frozenset({"POST", "PATCH"})
NOT_KEPT = frozenset({429})  # a throttled request did not run: its retry must


def api_user(request: HttpRequest) -> AbstractBaseUser | None:
    """The caller as the API's authenticators see it, or None (the view then answers 401 or 403)."""
    before = request.__dict__.get("user")
    # DRF imports the classes named in the setting; its stubs type them as the names (str).
    classes = api_settings.DEFAULT_AUTHENTICATION_CLASSES
    drf_request = Request(request, authenticators=[auth() for auth in classes])  # type: ignore[operator]
    try:
        user = drf_request.user
    except APIException:
        user = None
    finally:  # leave the request as the view expects to find it
        if before is None:
            request.__dict__.pop("user", None)
        else:
            request.user = before
    return user if user is not None and user.is_authenticated else None


def _carries_a_secret(response: HttpResponse) -> bool:
    """An answer marked ``Cache-Control: no-store`` (e.g. a new token's secret) is never written down."""
    return "no-store" in response.get("Cache-Control", "")


def _replay(stored: IdempotencyKey) -> HttpResponse:
    response = HttpResponse(bytes(stored.body), status=stored.status_code, content_type=stored.content_type or None)
    response["Idempotent-Replayed"] = "true"
    return response


class IdempotencyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        key = request.headers.get(HEADER)
        if key is None or request.method not in METHODS or not request.path.startswith("/api/"):
            return self.get_response(request)
        if not key.strip() or len(key) > MAX_KEY_LENGTH:
            return JsonResponse(error_body("idempotency_key_invalid", f"An {HEADER} is 1 to {MAX_KEY_LENGTH} "
                                           "characters.", {HEADER: ["Invalid key."]}), status=400)
        user = api_user(request)
        if user is None:
            return self.get_response(request)
        try:
            return self._run_once(request, user, key)
        except DomainError as err:
            return JsonResponse(error_body(err.code, err.message), status=err.http_status)

    def _run_once(self, request: HttpRequest, user: AbstractBaseUser, key: str) -> HttpResponse:
        fingerprint = services.request_fingerprint(request)
        with transaction.atomic():
            stored = services.claim_key(user=user, key=key, fingerprint=fingerprint)
            if stored is not None:
                return _replay(stored)
            response = self.get_response(request)
            if response.status_code >= 500:
                transaction.set_rollback(True)  # neither the key nor any write of the failed request is kept
            elif response.streaming or response.status_code in NOT_KEPT or _carries_a_secret(response):
                services.forget_key(user=user, key=key)
            else:
                services.store_response(user=user, key=key, response=response)
            return response
