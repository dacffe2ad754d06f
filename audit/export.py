"""The audit trail as CSV: one row per changed field, like ODM AuditRecords (DOMAIN §8.2).

Values are written exactly as stored (no spreadsheet-formula escaping: the file is a faithful copy
of the record, 21 CFR 11.10(b)); open it as text, not by double-clicking into a spreadsheet.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

from audit.selectors import AuditEntry

COLUMNS = ["event id", "timestamp UTC", "action", "table", "record id", "field", "old value", "new value", "user",
           "service account", "reason", "request method", "url", "request id", "site"]


class _Echo:
    """A file-like object whose write returns the line, so csv.writer can feed a streaming response."""

    def write(self, value: str) -> str:
        return value


def entry_rows(entry: AuditEntry) -> Iterator[list[str]]:
    """The CSV rows of one event: one per changed field (one with empty field columns if none changed)."""
    head = [entry.slug, entry.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), entry.action, entry.table, entry.record_id]
    tail = [entry.username or "", entry.service_account or "", entry.reason or "", entry.method or "",
            entry.url or "", entry.request_id or "", entry.site_code or ""]
    changes = entry.changes or ()
    if not changes:
        yield [*head, "", "", "", *tail]
    for change in changes:
        yield [*head, change.field, change.old or "", change.new or "", *tail]


def csv_lines(entries: Iterable[AuditEntry]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(COLUMNS)
    for entry in entries:
        for row in entry_rows(entry):
            yield writer.writerow(row)
