"""Data locks: a data manager freezes or locks a subject, a site of a trial, or the whole trial.

A lock is never edited or deleted: it is released, with the releasing user, time and reason kept on
the row, and every insert and update is recorded by the audit triggers (``LockEvent``).

Subjects are named by string ("patients.Subject") so that this app imports nothing from ``patients``:
``patients`` calls ``locking.services.check_writable`` from its write services, one way only.
"""

from __future__ import annotations

import functools
import operator

import pgtrigger
from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from config.audit import audited
from trials.models import Site, TimeStampedModel, Trial

# Columns fixed when the lock is taken; only the release columns are written afterwards, once.
FIXED = ("trial_id", "site_id", "subject_id", "level", "reason", "locked_by_id", "locked_at", "created_at")


class Level(models.TextChoices):
    # Both refuse clinical data entry and change; only a database lock also refuses data queries and signatures.
    FREEZE = "freeze", "Freeze (no data entry or change; queries and signatures allowed)"
    LOCK = "lock", "Database lock (no change at all)"


@audited
class Lock(TimeStampedModel):
    """A freeze or lock of one scope: the trial (no site, no subject), a site of it, or one subject."""

    Level = Level

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="locks")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, null=True, blank=True, related_name="locks",
                             help_text="Empty for the whole trial. Set (the subject's site) for a subject lock.")
    subject = models.ForeignKey("patients.Subject", on_delete=models.PROTECT, null=True, blank=True,
                                related_name="locks", help_text="Empty for a trial or site lock.")
    level = models.CharField(max_length=6, choices=Level.choices)
    reason = models.TextField(help_text="Why the data are frozen or locked, e.g. 'Interim analysis cut-off'.")
    locked_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+",
                                  editable=False)
    locked_at = models.DateTimeField(default=timezone.now, editable=False)
    released_at = models.DateTimeField(null=True, blank=True, editable=False)
    released_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="+", editable=False)
    release_reason = models.TextField(blank=True, editable=False)

    class Meta:
        ordering = ["-locked_at", "-pk"]
        constraints = [
            # One active lock per scope; NULL site/subject count as equal (the trial-wide scope is one scope).
            models.UniqueConstraint(
                fields=["trial", "site", "subject"], condition=Q(released_at__isnull=True), nulls_distinct=False,
                name="lock_one_active_per_scope",
                violation_error_message="This scope already has an active lock.",
            ),
            models.CheckConstraint(condition=Q(level__in=Level.values), name="lock_level_valid"),
            models.CheckConstraint(condition=Q(subject__isnull=True) | Q(site__isnull=False),
                                   name="lock_subject_has_site",
                                   violation_error_message="A subject lock also names the subject's site."),
            models.CheckConstraint(condition=~Q(reason=""), name="lock_reason_given",
                                   violation_error_message="Give the reason for the lock."),
            models.CheckConstraint(
                condition=Q(released_at__isnull=True, released_by__isnull=True, release_reason="")
                | (Q(released_at__isnull=False, released_by__isnull=False) & ~Q(release_reason="")),
                name="lock_release_complete",
                violation_error_message="A release records who released the lock, when and why.",
            ),
        ]
        triggers = [
            pgtrigger.Protect(name="lock_never_deleted", operation=pgtrigger.Delete),
            pgtrigger.Protect(
                name="lock_only_released_once", operation=pgtrigger.Update,
                condition=functools.reduce(operator.or_, [
                    pgtrigger.Q(old__released_at__isnull=False),
                    *(pgtrigger.Q(**{f"old__{c}__df": pgtrigger.F(f"new__{c}")}) for c in FIXED),
                ]),
            ),
        ]

    def __str__(self) -> str:
        state = "" if self.active else " (released)"
        return f"{self.get_level_display().split(' (')[0]} of {self.scope_label}{state}"

    @property
    def active(self) -> bool:
        return self.released_at is None

    @property
    def scope_label(self) -> str:
        """'trial T001', 'site SA of T001' or 'subject SA-0001 of T001' (reads trial, site and subject)."""
        return scope_label(trial_code=self.trial.code, site_code=self.site.code if self.site is not None else None,
                           subject_code=self.subject.code if self.subject is not None else None)


def scope_label(*, trial_code: str, site_code: str | None, subject_code: str | None) -> str:
    if subject_code is not None:
        return f"subject {subject_code} of {trial_code}"
    if site_code is not None:
        return f"site {site_code} of {trial_code}"
    return f"trial {trial_code}"
