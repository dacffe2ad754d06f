"""A worker killed while it writes a package leaves no file that looks complete; the job shows as
stalled, is marked failed with the reason, and its retry (run by a real procrastinate worker) succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings as django_settings
from django.db import connection

from exports.models import ExportJob, State
from exports.services import create_export_job, fail_stalled_jobs, is_stalled, retry_export_job
from tests.exports.conftest import run_queued_jobs, stored_files
from tests.factories import screened

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("restore_catalogue")]
WORKER = Path(__file__).with_name("probe_worker.py")


def worker_database_url() -> str:
    parts = urlsplit(django_settings.DATABASE_URL)
    return urlunsplit(parts._replace(path=f"/{connection.settings_dict['NAME']}"))


def start_worker(export_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": worker_database_url(), "DJANGO_EXPORTS_DIR": str(export_dir),
           "EXPORTS_PROBE_DELAY": "1.0", "DJANGO_DEBUG": "1", "DJANGO_EXPORTS_HEARTBEAT_SECONDS": "0.5"}
    return subprocess.Popen([sys.executable, str(WORKER)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def wait_for(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_killed_worker_leaves_no_complete_file_and_the_retry_succeeds(world, export_dir, settings):
    settings.EXPORTS_STALLED_AFTER_SECONDS = 2
    for _ in range(4):
        screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    job = create_export_job(by=world.data_manager, trial=world.trial, format_code="slowprobe")
    worker = start_worker(export_dir)
    try:
        wait_for(lambda: ExportJob.objects.get(pk=job.pk).state == State.RUNNING
                 and any(p.endswith(".partial") for p in stored_files(export_dir)))
        time.sleep(1.5)  # a few rows into the file
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)

    job.refresh_from_db()
    assert job.state == State.RUNNING and job.file_name == ""
    left = stored_files(export_dir)
    assert left and all(p.startswith(".partial/") and p.endswith(".zip.partial") for p in left), left

    time.sleep(2.5)  # no heartbeat since the kill
    job.refresh_from_db()
    assert is_stalled(job)
    assert fail_stalled_jobs() == 1
    job.refresh_from_db()
    assert job.state == State.FAILED and "worker stopped" in job.error

    retry_export_job(job=job, by=world.data_manager)
    run_queued_jobs()
    job.refresh_from_db()
    assert (job.state, job.attempts) == (State.DONE, 2), job.error
    assert stored_files(export_dir) == [job.file_name]  # the killed attempt's partial file is gone
