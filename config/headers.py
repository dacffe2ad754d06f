"""Response headers set on every response (the Content-Security-Policy is django-csp's, see settings)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_cache_control

# Features no page of the product uses: a script injected into a page cannot ask for them either.
PERMISSIONS_POLICY = ", ".join(f"{feature}=()" for feature in (
    "camera", "microphone", "geolocation", "payment", "usb", "serial", "bluetooth", "midi",
    "display-capture", "fullscreen",
))
CACHEABLE_API_PREFIXES = ("/api/schema/",)  # the OpenAPI schema: no subject data


def stores_nothing(path: str) -> bool:
    """API responses carry subject data: no browser or proxy may keep them. The schema carries none."""
    return path.startswith("/api/") and not path.startswith(CACHEABLE_API_PREFIXES)


class SecurityHeadersMiddleware:
    """``Permissions-Policy`` on every response, ``Cache-Control: no-store`` on every API response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        if stores_nothing(request.path):
            patch_cache_control(response, no_store=True)
        return response
