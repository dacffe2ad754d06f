"""Reads of export jobs, scoped like every read (DESIGN: everything is scoped by site)."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from exports.models import ExportJob
from trials.access import access_of
from trials.models import Membership

DATA_MANAGER = Membership.Role.DATA_MANAGER


def visible_jobs(user: Any) -> Q:
    """A user's own export jobs; and for data managers, the jobs of their trials within their scope: every
    job of the trial for a trial-wide data manager, the jobs of their one site for a site-bound one."""
    access = access_of(user)
    if access.is_superuser:
        return Q()
    q = Q(requested_by_id=user.pk)
    wide = sorted(t for t, roles in access.trial_roles.items() if DATA_MANAGER in roles)
    if wide:
        q |= Q(trial_id__in=wide)
    for (trial_id, site_id), roles in sorted(access.site_roles.items()):
        if DATA_MANAGER in roles:
            q |= Q(trial_id=trial_id, site_id=site_id)
    return q & Q(trial_id__in=sorted(access.trial_ids))  # a personal token sees its one trial only


def list_export_jobs(*, user: Any) -> QuerySet[ExportJob]:
    """Newest first, with what a list shows (one query)."""
    return (ExportJob.objects.filter(visible_jobs(user)).select_related("trial", "requested_by")
            .order_by("-created_at", "-pk"))
