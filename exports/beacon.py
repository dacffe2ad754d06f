"""A running job's progress and heartbeat, written on a connection of their own.

The package is read inside one read-only REPEATABLE READ transaction, which cannot write, and whose
writes nobody would see before it ends anyway. Progress (files done of total) and a heartbeat every
``EXPORTS_HEARTBEAT_SECONDS`` therefore go through a second, autocommit connection: the admin and the
API show progress while the job runs, and a job whose heartbeat stopped (its worker died) is stalled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection

from exports.models import ExportJob

logger = logging.getLogger("exports")
TABLE = ExportJob._meta.db_table


class Beacon:
    def __init__(self, job_id: int, attempt: int, on_progress: Callable[[int, int], None] | None = None) -> None:
        self.job_id, self.attempt, self.on_progress = job_id, attempt, on_progress
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conn: Any = None
        self._thread = threading.Thread(target=self._beat, name=f"export-{job_id}-heartbeat", daemon=True)

    def __enter__(self) -> Beacon:
        self._conn = connection.get_new_connection(connection.get_connection_params())
        self._conn.autocommit = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()

    def _update(self, assignments: str, params: list[Any]) -> None:
        sql = (f"UPDATE {TABLE} SET {assignments}heartbeat_at = now() "
               "WHERE id = %s AND attempts = %s AND state = 'running'")
        try:
            with self._lock, self._conn.transaction():
                # Never wait long on the job's row (it may be held by the transaction that created it, e.g. in
                # tests). SET LOCAL: behind a transaction-mode pooler a session setting would outlive this
                # transaction on a server connection that other clients use next.
                self._conn.execute("SET LOCAL lock_timeout = '2s'")
                self._conn.execute(sql, [*params, self.job_id, self.attempt])
        except Exception:  # progress is informative; a failed update must not fail the export
            logger.warning("Could not record the progress of export job %s", self.job_id, exc_info=True)

    def progress(self, done: int, total: int) -> None:
        self._update("files_done = %s, files_total = %s, ", [done, total])
        if self.on_progress is not None:
            self.on_progress(done, total)

    def _beat(self) -> None:
        while not self._stop.wait(settings.EXPORTS_HEARTBEAT_SECONDS):
            self._update("", [])
