"""Many machines, one database: two web servers (gunicorn) and two procrastinate workers, each a process of
its own, against the test database. They share nothing but PostgreSQL, so every rule that must hold across
machines (one lock per scope, a lock seen everywhere, each export run once) is held by the database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection

from exports.models import ExportJob, State
from locking.models import Lock
from tests.api.support import result_row
from tests.factories import consented
from trials.services import issue_personal_token, issue_service_account

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("restore_catalogue")]
ROOT = Path(__file__).resolve().parent.parent


def shared_database_url() -> str:
    """The database pytest-django created for this run (``test_<name>``), which the processes share."""
    return urlunsplit(urlsplit(settings.DATABASE_URL)._replace(path=f"/{connection.settings_dict['NAME']}"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Machines:
    """Two gunicorn servers and two export workers: ``servers[i]`` is a base URL."""

    def __init__(self, export_dir: str) -> None:
        self.env = {**os.environ, "DATABASE_URL": shared_database_url(), "DJANGO_DEBUG": "1",
                    "DJANGO_EXPORTS_DIR": export_dir, "DJANGO_EXPORTS_HEARTBEAT_SECONDS": "0.5"}
        self.ports = [free_port(), free_port()]
        self.servers = [f"http://127.0.0.1:{port}" for port in self.ports]
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for port in self.ports:
            self._spawn("-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1")
        for _ in range(2):
            self._spawn("manage.py", "procrastinate", "worker", "--queues", "exports")
        for server in self.servers:
            wait_for(lambda server=server: answers(server), timeout=45)

    def _spawn(self, *args: str) -> None:
        self.processes.append(subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                               start_new_session=True))

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@pytest.fixture
def machines() -> Iterator[Machines]:
    with tempfile.TemporaryDirectory() as export_dir:
        running = Machines(export_dir)
        try:
            running.start()
            yield running
        finally:
            running.stop()


def answers(server: str) -> bool:
    try:
        urllib.request.urlopen(f"{server}/api/v1/analytes/", timeout=2)
    except urllib.error.HTTPError:
        return True  # 401/403: the server is up
    except OSError:
        return False
    return True


def wait_for(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def call(server: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{server}{path}", data=data, method="GET" if body is None else "POST",
                                     headers={"Authorization": f"Token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def at_once(*calls: Any) -> list[tuple[int, Any]]:
    """Run the calls in threads released together; their answers in call order."""
    barrier = threading.Barrier(len(calls))
    answers_: dict[int, tuple[int, Any]] = {}

    def run(index: int) -> None:
        barrier.wait(timeout=30)
        answers_[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return [answers_[i] for i in range(len(calls))]


def test_two_servers_and_two_workers_share_locks_and_jobs(world: Any, machines: Machines) -> None:
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    _account, lab = issue_service_account(trial=world.trial, sites=[world.site_a], name="Lab", by=world.data_manager)
    _token, dm = issue_personal_token(trial=world.trial, name="Locks", expires_on=None, by=world.data_manager)
    one, two = machines.servers

    # Two exports asked of different servers: each is run once, by one of the two workers.
    jobs = [call(server, "/api/v1/exports/", dm, {"trial": world.trial.code, "format": "csv"}) for server in
            (one, two)]
    assert [status for status, _ in jobs] == [202, 202], jobs
    ids = [body["id"] for _, body in jobs]
    wait_for(lambda: set(ExportJob.objects.filter(pk__in=ids).values_list("state", flat=True)) == {State.DONE},
             timeout=60)
    assert sorted(ExportJob.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == [1, 1]
    with connection.cursor() as cursor:
        cursor.execute("SELECT j.id, count(*) FILTER (WHERE e.type = 'started') FROM procrastinate_jobs j "
                       "JOIN procrastinate_events e ON e.job_id = j.id WHERE j.id = ANY(%s) GROUP BY j.id",
                       [list(ExportJob.objects.filter(pk__in=ids).values_list("task_id", flat=True))])
        assert sorted(started for _, started in cursor.fetchall()) == [1, 1]

    # The same site locked through both servers at once: one lock, and a 409 for the other.
    lock = {"trial": world.trial.code, "site": world.site_a.code, "level": "lock", "reason": "Interim analysis"}
    answers_ = at_once(lambda: call(one, "/api/v1/locks/", dm, lock), lambda: call(two, "/api/v1/locks/", dm, lock))
    assert sorted(status for status, _ in answers_) == [201, 409], answers_
    assert [body["code"] for status, body in answers_ if status == 409] == ["already_locked"]
    assert Lock.objects.filter(site=world.site_a, released_at__isnull=True).count() == 1

    # The lock taken through one server is honoured by the other: a result for the site is refused.
    status, body = call(two, "/api/v1/results/", lab, {"results": [result_row(subject, 1)]})
    assert status == 409, body
    assert not subject.results.exists()
