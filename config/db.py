"""Prepared reads: the few hand-written statements that run on every API ingestion request.

Django's psycopg cursors bind parameters on the client, so PostgreSQL parses and plans each statement
again; for the per-request reads of a result post (the token with its memberships; a small post's subjects,
locks, results and draws) planning cost more than executing. ``prepared_rows`` runs one statement with
server-side binding, prepared once per connection (psycopg's ``prepare=True``) and planned generically
(``plan_cache_mode``, config.settings), through Django's cursor wrapper, so the statement is still
wrapped, counted and recorded (with its parameters) like any other query. Off (a plain cursor) behind a
transaction-mode pooler, where the next statement may reach another server connection that never saw the
PREPARE.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection


class _PreparedCursor(psycopg.Cursor[Any]):
    """A server-side binding cursor whose statements are prepared (psycopg keeps them per connection)."""

    def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None,
                binary: bool | None = None) -> Any:
        return super().execute(query, params, prepare=True if prepare is None else prepare, binary=binary)


def prepared_rows(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The rows of one read-only statement (``%s`` placeholders), prepared where the settings allow."""
    if not settings.PREPARED_READS:
        with connection.cursor() as plain:
            plain.execute(sql, params)
            return plain.fetchall()
    connection.ensure_connection()
    # Django's wrapper (execute wrappers, error translation); the debug wrapper would log the statement as
    # None (it reads the text from a client-binding cursor), so a logged query is recorded here instead.
    cursor = connection.make_cursor(_PreparedCursor(connection.connection))  # type: ignore[arg-type]
    with cursor:
        start = time.monotonic()
        try:
            cursor.execute(sql, params)
            return cursor.fetchall()
        finally:
            if connection.queries_logged:
                connection.queries_log.append({"sql": connection.ops.compose_sql(sql, params),  # type: ignore[attr-defined]  # PostgreSQL-only
                                               "time": f"{time.monotonic() - start:.3f}"})
