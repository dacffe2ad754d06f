"""Reads of data locks, scoped like every clinical read (DESIGN: everything is scoped by site)."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from locking.models import Lock
from trials.access import access_of


def visible_locks(user: Any) -> Q:
    """Locks a user may read: trial-wide ones of their trials, and site and subject ones of their sites
    (a trial-wide data manager reads every lock of the trial)."""
    access = access_of(user)
    if access.is_superuser:
        return Q()
    return Q(site__isnull=True, trial_id__in=sorted(access.trial_ids)) | access.site_q()


def list_locks(*, user: Any) -> QuerySet[Lock]:
    """Newest first, with everything the list shows (one query)."""
    return (Lock.objects.filter(visible_locks(user))
            .select_related("trial", "site", "subject", "locked_by", "released_by")
            .order_by("-locked_at", "-pk"))
