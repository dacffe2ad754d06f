"""The admin speaks the site's time: a user whose sites share one time zone works in that zone.

Django's own form fields and displays then read and show wall-clock times in it. Users across several
zones (data managers, monitors of many sites) keep UTC here; the admin converts each record's times to
its own site's zone (``trials.admin_scoping``). The API never relies on the current zone: its times
carry their offsets.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from trials.access import access_of
from trials.models import Site


def single_time_zone(user: object) -> str | None:
    """The one time zone shared by every site the user may read, or None (several, none, or a superuser)."""
    access = access_of(user)  # type: ignore[arg-type]
    if access.is_superuser or not (access.site_ids or access.trial_roles):
        return None
    sites = Site.objects.filter(Q(pk__in=sorted(access.site_ids))
                                | Q(trial_sites__trial_id__in=sorted(access.trial_roles)))
    zones = list(sites.values_list("time_zone", flat=True).distinct()[:2])
    return zones[0] if len(zones) == 1 else None


class SiteTimeZoneMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        zone = None
        if user is not None and user.is_authenticated and not request.path.startswith("/api/"):
            zone = single_time_zone(user)
        request.site_time_zone = zone  # type: ignore[attr-defined]
        if zone is None:
            return self.get_response(request)
        with timezone.override(zone):
            return self.get_response(request)
