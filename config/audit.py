"""Database-level audit trail: PostgreSQL triggers (django-pghistory) record every insert, update
and delete on tracked tables, whatever wrote them (admin, API, commands or raw SQL).

Each write carries a context row (pghistory's ``pgh_context``) saying where it came from: the user,
the service account for laboratory systems, the request (method, path, a request id also returned
to the client as ``X-Request-ID``), the source (admin, api, command) and, for corrections, the
reason for change. Writes that bypass the application (psql, raw SQL) are still recorded, with
the database user and no application context.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import pghistory
from django.core.management.base import BaseCommand
from django.db import models
from django.http import HttpRequest, HttpResponse
from pghistory.middleware import HistoryMiddleware

M = TypeVar("M", bound=type[models.Model])


def audited(model: M) -> M:
    """Track every insert, update and delete of ``model`` in its history table."""
    return pghistory.track(
        pghistory.InsertEvent(), pghistory.UpdateEvent(), pghistory.DeleteEvent(),
    )(model)


class AuditContextMiddleware(HistoryMiddleware):
    """pghistory's user and path, plus the request id, method and source of every write request."""

    def get_context(self, request: HttpRequest) -> dict[str, Any]:
        context = super().get_context(request)
        request.audit_request_id = str(uuid.uuid4())  # type: ignore[attr-defined]
        source = "api" if request.path.startswith("/api/") else "admin" if request.path.startswith("/admin/") else (
            "web")
        return {**context, "request_id": request.audit_request_id, "method": request.method,  # type: ignore[attr-defined]
                "source": source}

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = super().__call__(request)
        request_id = getattr(request, "audit_request_id", None)
        if request_id:
            response["X-Request-ID"] = request_id
        return response


def note_service_account(account: Any) -> None:
    """Name the laboratory system behind a token-authenticated write in the audit context."""
    pghistory.context(service_account=account.name, service_account_id=account.pk)


def note_personal_token(token: Any) -> None:
    """Name the personal API token behind a token-authenticated write (its user is the person)."""
    pghistory.context(personal_token=token.name, personal_token_id=token.pk)


class AuditedCommand(BaseCommand):
    """A management command whose writes carry ``source=command`` and the command's name."""

    def execute(self, *args: Any, **options: Any) -> Any:
        name = type(self).__module__.rsplit(".", 1)[-1]
        with pghistory.context(source="command", command=name):
            return super().execute(*args, **options)
