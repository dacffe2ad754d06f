"""Database-level audit trail: PostgreSQL triggers (django-pghistory) record every insert, update
and delete on tracked tables, whatever wrote them (admin, API, commands or raw SQL)."""

from __future__ import annotations

from typing import TypeVar

import pghistory
from django.db import models

M = TypeVar("M", bound=type[models.Model])


def audited(model: M) -> M:
    """Track every insert, update and delete of ``model`` in its history table."""
    return pghistory.track(
        pghistory.InsertEvent(), pghistory.UpdateEvent(), pghistory.DeleteEvent(),
    )(model)
