"""The audit app's own rows: the log of audit-trail exports, and the admin's entry point to the trail."""

from __future__ import annotations

import pgtrigger
from django.conf import settings
from django.db import models
from django.utils import timezone
from pghistory.models import Events

from config.audit import audited


@audited
class AuditExport(models.Model):
    """One download of the audit trail (DOMAIN §8.2 action EXPORT): who, when, in which format, with which
    filters. Append-only: the database refuses to change or delete a row, whoever connects (so it is not
    a TimeStampedModel: it is never updated, and ``exported_at`` is its time)."""

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        CASEBOOK = "casebook", "PDF casebook of one subject"

    exported_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    exported_at = models.DateTimeField(default=timezone.now, editable=False)
    format = models.CharField(max_length=10, choices=Format.choices, default=Format.CSV)
    filters = models.JSONField(default=dict, blank=True, help_text="The filters the export applied.")

    class Meta:
        ordering = ["-exported_at", "-pk"]
        triggers = [
            pgtrigger.Protect(name="auditexport_append_only", operation=pgtrigger.Update | pgtrigger.Delete),
        ]

    def __str__(self) -> str:
        return f"{self.get_format_display()} export by {self.exported_by_id} at {self.exported_at:%Y-%m-%d %H:%M}"


class AuditEvent(Events):
    """pghistory's aggregate of every event table, as the admin's "Audit trail" entry. It has no table;
    the admin's pages read the event tables through ``audit.selectors``."""

    class Meta:
        proxy = True
        verbose_name = "audit trail entry"
        verbose_name_plural = "audit trail"
