"""Background tasks of the exports (procrastinate, on PostgreSQL: no broker). Workers run them with
``manage.py procrastinate worker``; any number of workers on any machine share the database's queue."""

from __future__ import annotations

from typing import Any

from procrastinate.contrib.django import app

from exports import services

QUEUE = "exports"


@app.task(name="exports.run_export", queue=QUEUE)
def run_export(job_id: int) -> None:
    """Run one attempt of an export job (a no-op if the job is no longer queued)."""
    services.run_export_job(job_id)


def fail_stalled_jobs(timestamp: int) -> None:
    """Every minute: a running job whose heartbeat stopped (its worker died) is marked failed, with the
    reason, so that the admin and the API show it and offer the retry."""
    services.fail_stalled_jobs()


# Untyped on purpose: mypy 1.18 crashes on procrastinate's typing of a periodic task.
_periodic: Any = app.periodic(cron="* * * * *", periodic_id="exports.fail_stalled")
fail_stalled = _periodic(app.task(name="exports.fail_stalled", queue=QUEUE)(fail_stalled_jobs))
