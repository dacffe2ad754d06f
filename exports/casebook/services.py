"""One subject's casebook downloaded on its own (the admin's "Casebook (PDF)"): recorded in the audit trail,
then printed from one snapshot of the data."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from audit.models import AuditExport
from audit.services import record_export
from exports.casebook.content import load_casebook
from exports.casebook.pdf import render_casebook
from patients.models import Subject


@contextmanager
def snapshot() -> Iterator[None]:
    """A read-only REPEATABLE READ transaction: every query inside reads the same snapshot (the cut-off).
    Inside a transaction already open (a test's), its isolation cannot change: a savepoint of it."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def download_casebook(*, subject: Subject, by: User) -> bytes:
    """The subject's casebook as of now. The caller has checked that ``by`` reads the subject's site; the
    download is logged (who, when, which subject) before anything is read."""
    record_export(by=by, format=AuditExport.Format.CASEBOOK,
                  filters={"trial": subject.trial.code, "site": subject.site.code, "subject": subject.code})
    with snapshot():
        cutoff = timezone.now()
        return render_casebook(load_casebook(subject_id=subject.pk, cutoff=cutoff))
