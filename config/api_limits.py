"""Limits on API requests that apply before any view runs."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from config.api import error_body


def body_too_large(request: HttpRequest) -> bool:
    """True if the declared body length is over ``API_MAX_BODY_BYTES`` (a missing or bad length is 0)."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False
    return length > settings.API_MAX_BODY_BYTES


class ApiBodyLimitMiddleware:
    """Answer an API request whose body is over ``API_MAX_BODY_BYTES`` with 413 in the API's error shape."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/") and body_too_large(request):
            limit_mb = settings.API_MAX_BODY_BYTES / (1024 * 1024)
            message = f"The request body is larger than the API's limit of {limit_mb:g} MB."
            return JsonResponse(error_body("body_too_large", message), status=413)
        return self.get_response(request)
