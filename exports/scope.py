"""What one export covers: the trial, the sites the exporting user may read (narrowed on request), the
selected subjects if any, and the data cut-off. Formats read through ``subjects()`` and ``site_q()`` only,
so that no export restates site scope (trials.access owns it)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet

from trials.access import access_of
from trials.models import Site, Trial


@dataclass(frozen=True)
class ExportScope:
    trial: Trial
    site_ids: tuple[int, ...]
    user: Any
    cutoff: dt.datetime
    subject_ids: tuple[int, ...] | None = None
    # The export's snapshot, when its transaction is its own: a second connection may read it (exports.snapshot).
    snapshot: str | None = None

    def site_q(self, *, site: str = "site", subject: str | None = None) -> Q:
        """Rows of the scope's sites (and selected subjects): ``site`` is the path to the row's site,
        ``subject`` the path to its subject (needed only when subjects were selected)."""
        q = Q(**{f"{site}__in": self.site_ids})
        if self.subject_ids is not None:
            q &= Q(**{f"{subject or 'subject'}__in": self.subject_ids})
        return q

    def subjects(self) -> QuerySet[Any]:
        from patients.models import Subject

        qs = Subject.objects.filter(trial=self.trial, site_id__in=self.site_ids)
        if self.subject_ids is not None:
            qs = qs.filter(pk__in=self.subject_ids)
        return qs.order_by("code")

    def sites(self) -> QuerySet[Site]:
        return Site.objects.filter(pk__in=self.site_ids).order_by("code")


def readable_site_ids(user: Any, trial: Trial, site_codes: Iterable[str] | None = None) -> tuple[int, ...]:
    """The trial's sites the user may read, narrowed to ``site_codes`` when given (unknown or unreadable
    codes simply do not widen the scope)."""
    access = access_of(user)
    sites = Site.objects.filter(trial_sites__trial=trial).order_by("code")
    if site_codes is not None:
        sites = sites.filter(code__in=list(site_codes))
    return tuple(s.pk for s in sites if access.can_read(trial_id=trial.pk, site_id=s.pk))
