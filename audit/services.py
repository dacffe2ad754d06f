"""Writes of the audit app: the record of each export (DOMAIN §8.2, action EXPORT): the audit trail's CSV and a
subject's PDF casebook downloaded from the admin."""

from __future__ import annotations

from typing import Any

import pghistory
from django.contrib.auth.models import User
from django.db import transaction

from audit.models import AuditExport

REASONS = {AuditExport.Format.CSV: "Audit trail export", AuditExport.Format.CASEBOOK: "Casebook export"}


@transaction.atomic
def record_export(*, by: User, filters: dict[str, Any],
                  format: str = AuditExport.Format.CSV) -> AuditExport:
    """Log an export before its rows are sent: who, when and with which filters. The insert is also an
    event of the audit trail, with the request's context (url, request id) where there is one."""
    with pghistory.context(user=by.pk, reason=REASONS[AuditExport.Format(format)], action="export"):
        return AuditExport.objects.create(exported_by=by, filters=filters, format=format)
