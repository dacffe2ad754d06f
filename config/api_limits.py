"""Limits on API requests that apply before any view runs."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from config.api import error_body
from config.api_parsers import NUL_MESSAGE


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


class ApiNulMiddleware:
    """A NUL character in an API path or query string never reaches the database (PostgreSQL refuses it in
    text): a path with one names no record (404), a query parameter with one is a 400 on that parameter."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith("/api/"):
            return self.get_response(request)
        if "\x00" in request.path:
            return JsonResponse(error_body("not_found", "Not found."), status=404)
        if bad := sorted({key for key, values in request.GET.lists()
                          if "\x00" in key or any("\x00" in value for value in values)}):
            return JsonResponse(error_body("invalid", "Invalid input.", {key.replace("\x00", "") or "query": [
                NUL_MESSAGE] for key in bad}), status=400)
        return self.get_response(request)
