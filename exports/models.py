"""Export jobs: one row per export of case report forms, which is also its audit record (DOMAIN §8.2,
action EXPORT: who, what, which sites, when).

A job is created ``queued`` by the admin, the API or the command, run by a worker (``exports.tasks``)
or in-process (``manage.py export_trial``), and ends ``done`` (its package is in storage under
``file_name``) or ``failed`` (``error`` says why; a retry runs the same job again as a new attempt).
Every insert and update is recorded by the audit triggers, except the progress counters and the
heartbeat, which change while the package is written and say nothing about who exported what.
"""

from __future__ import annotations

import pghistory
import pgtrigger
from django.conf import settings
from django.db import models
from django.db.models import Q

from trials.models import Site, TimeStampedModel, Trial

# Columns that move while a job runs: kept out of the audit trail (they would add one event per file).
UNAUDITED = ["files_done", "heartbeat_at", "updated_at"]


class State(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


@pghistory.track(
    pghistory.InsertEvent(), pghistory.UpdateEvent(), pghistory.DeleteEvent(), exclude=UNAUDITED,
)
class ExportJob(TimeStampedModel):
    """One export: a trial's case report forms in one format, for the requesting user's sites (narrowed to
    ``sites`` and ``subjects`` when given), as one zip package with a manifest."""

    State = State
    # A job of several sites has no site: its audit rows are read only by readers of every site (audit.tables).
    AUDIT_EMPTY_SITE_MEANS_SEVERAL = True

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="export_jobs")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, null=True, blank=True, related_name="export_jobs",
                             help_text="The one site exported, when the export covers exactly one; empty for several.")
    format = models.CharField(max_length=20, help_text="Format code: csv, odm, sdtm, casebook...")
    sites = models.JSONField(default=list, blank=True,
                             help_text="Codes of the sites exported (the requester's sites, or those requested).")
    subjects = models.JSONField(null=True, blank=True,
                                help_text="Codes of the selected subjects; empty for every subject of the sites.")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="export_jobs")
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    attempts = models.PositiveIntegerField(default=0, help_text="Runs started (a retry is a new attempt).")
    files_done = models.PositiveIntegerField(default=0)
    files_total = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, help_text="Why the last attempt failed.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last sign of life of the running attempt.")
    cutoff = models.DateTimeField(null=True, blank=True,
                                  help_text="Data cut-off: the database snapshot the package was read from.")
    file_name = models.CharField(max_length=255, blank=True, help_text="The package's name in export storage.")
    size = models.BigIntegerField(null=True, blank=True, help_text="Bytes of the package.")
    sha256 = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the package.")
    manifest = models.JSONField(default=dict, blank=True)
    task_id = models.BigIntegerField(null=True, blank=True, editable=False,
                                     help_text="The background task (procrastinate job) of the current attempt.")

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["trial", "state"], name="exportjob_trial_state")]
        triggers = [pgtrigger.Protect(name="exportjob_never_deleted", operation=pgtrigger.Delete)]
        constraints = [
            models.CheckConstraint(condition=Q(state__in=State.values), name="exportjob_state_valid"),
            models.CheckConstraint(condition=Q(files_done__lte=models.F("files_total")),
                                   name="exportjob_progress_bounded"),
            models.CheckConstraint(
                condition=~Q(state=State.DONE) | (Q(finished_at__isnull=False, cutoff__isnull=False, size__isnull=False)
                                                 & ~Q(file_name="") & ~Q(sha256="")),
                name="exportjob_done_has_package",
                violation_error_message="A finished export names its package, size, SHA-256 and cut-off.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.format} export of {self.trial_id} #{self.pk} ({self.state})"

    @property
    def progress(self) -> str:
        return f"{self.files_done}/{self.files_total}" if self.files_total else "-"
