"""Data queries: a question about one field of one clinical record, and its thread of messages.

A data manager or monitor (or an automatic check) raises a query on a field of a subject's record; the
site answers; the data manager closes it or re-opens it. Rows are written only by
``dataqueries.services`` and ``dataqueries.checks``; nothing is ever deleted (PROTECT foreign keys and a
trigger), and every message is kept as it was written (DOMAIN §8.2: QUERY_OPEN/CLOSE are audited
workflow actions).
"""

from __future__ import annotations

import pgtrigger
from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q

from config.audit import audited
from patients.models import Subject
from trials.models import Site, TimeStampedModel, Trial


class CheckCode(models.TextChoices):
    """The automatic checks of ``dataqueries.checks``; the code is stored on each query they raise."""

    LAB_IMPLAUSIBLE = "lab_implausible", "Lab value outside physiological limits"
    AE_BEFORE_CONSENT = "ae_before_consent", "Adverse event starting before consent"
    RESPONSE_WITHOUT_SAMPLE = "response_without_sample", "Response assessment without a marrow or blood sample"
    LD_DOSE_DEVIATION = "ld_dose_deviation", "Lymphodepletion dose outside tolerance without a reason"
    CRS_GRADE_MISMATCH = "crs_grade_mismatch", "CRS grade disagrees with its components"
    AE_UNCODED = "ae_uncoded", "Adverse event term not coded to the CTCAE v5.0 dictionary"


@audited
class DataQuery(TimeStampedModel):
    class Origin(models.TextChoices):
        MANUAL = "manual", "Raised by a person"
        AUTOMATIC = "automatic", "Raised by an automatic check"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ANSWERED = "answered", "Answered by the site"
        CLOSED = "closed", "Closed"

    # Counted as "open" in the admin and the API: the query still needs someone's action.
    UNRESOLVED = (Status.OPEN, Status.ANSWERED)

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="+")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="data_queries")
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, related_name="+",
                                     help_text="The kind of record queried.")
    object_id = models.PositiveBigIntegerField(help_text="The queried record's id.")
    record = GenericForeignKey("content_type", "object_id")
    field_name = models.CharField(max_length=60, help_text="The queried field of the record.")
    origin = models.CharField(max_length=10, choices=Origin.choices)
    check_code = models.CharField(max_length=30, choices=CheckCode.choices, blank=True,
                                  help_text="The automatic check that raised the query.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    auto_resolved = models.BooleanField(
        default=False, help_text="Closed by its check because the data no longer breaks the rule.")
    raised_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                  related_name="+", help_text="Empty for an automatic check.")
    raised_at = models.DateTimeField()
    text = models.TextField()

    class Meta:
        ordering = ["-raised_at", "-pk"]
        verbose_name_plural = "data queries"
        indexes = [
            # Open-query counts per site and subject read only this (small) partial index.
            models.Index(fields=["site", "subject"], condition=Q(status__in=["open", "answered"]),
                         name="dataquery_unresolved_idx"),
            models.Index(fields=["content_type", "object_id"], name="dataquery_record_idx"),
        ]
        constraints = [
            # One thread per check, record and field: re-running the checks never duplicates a query.
            models.UniqueConstraint(fields=["check_code", "content_type", "object_id", "field_name"],
                                    condition=Q(origin="automatic"), name="dataquery_one_per_check_field"),
            models.CheckConstraint(
                condition=(Q(origin="manual", check_code="", raised_by__isnull=False)
                           | (Q(origin="automatic", raised_by__isnull=True) & ~Q(check_code=""))),
                name="dataquery_origin_consistent",
                violation_error_message="A person's query names who raised it; an automatic one names its check.",
            ),
            models.CheckConstraint(condition=~Q(text=""), name="dataquery_has_text"),
            models.CheckConstraint(condition=Q(auto_resolved=False) | Q(status="closed"),
                                   name="dataquery_auto_resolved_is_closed"),
        ]
        triggers = [pgtrigger.Protect(name="dataquery_never_deleted", operation=pgtrigger.Delete)]

    def __str__(self) -> str:
        return f"Query {self.pk} on {self.field_name.replace('_', ' ')} ({self.get_status_display().lower()})"

    @property
    def record_type(self) -> str:
        """``app_label.model`` of the queried record, e.g. ``patients.adverseevent``."""
        return f"{self.content_type.app_label}.{self.content_type.model}"


@audited
class QueryMessage(models.Model):
    """One step of a query's thread. Written once, never changed or deleted (a database trigger)."""

    class Kind(models.TextChoices):
        RAISE = "raise", "Raised"
        ANSWER = "answer", "Answered"
        CLOSE = "close", "Closed"
        REOPEN = "reopen", "Re-opened"
        AUTO_RESOLVE = "auto_resolve", "Closed automatically (condition resolved)"

    query = models.ForeignKey(DataQuery, on_delete=models.PROTECT, related_name="messages")
    kind = models.CharField(max_length=15, choices=Kind.choices)
    text = models.TextField(blank=True)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                           related_name="+", help_text="Empty for an automatic check.")
    at = models.DateTimeField()

    class Meta:
        ordering = ["query", "at", "pk"]
        indexes = [models.Index(fields=["query", "at"], name="querymessage_thread_idx")]
        constraints = [
            # People answer and close; only the checks act without a person (raise, re-open, auto-resolve).
            models.CheckConstraint(condition=Q(by__isnull=False) | Q(kind__in=["raise", "reopen", "auto_resolve"]),
                                   name="querymessage_person_for_answer_and_close"),
            models.CheckConstraint(condition=~Q(kind="auto_resolve") | Q(by__isnull=True),
                                   name="querymessage_auto_resolve_by_check"),
        ]
        triggers = [pgtrigger.Protect(name="querymessage_append_only", operation=pgtrigger.Update | pgtrigger.Delete)]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} at {self.at:%Y-%m-%d %H:%M}"
