"""The product behind PgBouncer in transaction mode (README "Running behind PgBouncer"), with one server
connection for every client, so that each transaction may follow another client's on the same connection.

The audit context of a request (who, which request, which system) must reach the audit rows of that
request's writes, and must not stay on the server connection for the next client's write. Skipped when
``pgbouncer`` is not installed (Debian/Ubuntu: ``apt-get install pgbouncer``)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection

from tests.api.support import result_row
from tests.factories import consented
from tests.test_many_servers import ROOT, call, free_port, wait_for
from trials.services import issue_service_account

PGBOUNCER = shutil.which("pgbouncer") or next((p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
                                               if os.path.exists(p)), None)
pytestmark = [pytest.mark.skipif(PGBOUNCER is None, reason="pgbouncer is not installed (apt-get install pgbouncer)"),
              pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("restore_catalogue")]


def bouncer_config(directory: Path, port: int) -> Path:
    """Transaction pooling, one server connection, every database of the test server under its own user."""
    params = connection.get_connection_params()
    host, server_port, user = params.get("host") or "127.0.0.1", params.get("port") or 5432, params["user"]
    ini = directory / "pgbouncer.ini"
    ini.write_text(f"""[databases]
* = host={host} port={server_port} user={user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 1
max_client_conn = 50
ignore_startup_parameters = extra_float_digits,options
logfile = {directory / "pgbouncer.log"}
pidfile = {directory / "pgbouncer.pid"}
""")
    return ini


def run_as() -> list[str]:
    """PgBouncer refuses to run as root: run it as the owner of the server's socket directory."""
    if os.geteuid() != 0:
        return []
    host = connection.get_connection_params().get("host") or ""
    owner = os.stat(host).st_uid if host.startswith("/") else 65534
    return ["-u", pwd.getpwuid(owner).pw_name]


@pytest.fixture
def bouncer() -> Iterator[str]:
    """The URL of the test database through PgBouncer."""
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o777)  # written by PgBouncer's own user
        port = free_port()
        process = subprocess.Popen([str(PGBOUNCER), *run_as(), str(bouncer_config(Path(directory), port))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        url = f"postgresql://{connection.get_connection_params()['user']}@127.0.0.1:{port}/{connection.settings_dict['NAME']}"
        try:
            wait_for(lambda: connects(url), timeout=20)
            yield url
        finally:
            process.terminate()
            process.wait(10)


def connects(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


@pytest.fixture
def server_behind(bouncer: str) -> Iterator[str]:
    """One gunicorn server (two threads) connected through PgBouncer, configured as the README says."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": bouncer, "DATABASE_POOL_MODE": "transaction", "DJANGO_DEBUG": "1"}
    env.pop("DATABASE_USER", None)
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}",
                                "--workers", "1", "--threads", "2"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    server = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: call_ok(server), timeout=45)
        yield server
    finally:
        process.terminate()
        process.wait(15)


def call_ok(server: str) -> bool:
    try:
        call(server, "/api/v1/analytes/", "none.none")
    except OSError:
        return False
    return True


def context_of(table: str, where: str, params: list[Any]) -> list[Any]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT c.metadata FROM {table} e LEFT JOIN pghistory_context c ON c.id = e.pgh_context_id "
                       f"WHERE {where} ORDER BY e.pgh_id", params)
        return [None if row[0] is None else json.loads(row[0]) for row in cursor.fetchall()]


def test_the_audit_context_of_a_request_stays_with_its_transaction_behind_pgbouncer(world: Any, bouncer: str,
                                                                                     server_behind: str) -> None:
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    _account, lab = issue_service_account(trial=world.trial, sites=[world.site_a], name="Lab behind PgBouncer",
                                          by=world.data_manager)
    status, body = call(server_behind, "/api/v1/results/", lab, {"results": [result_row(subject, 1)]})
    assert status == 201, body

    # The same (only) server connection, now used by a client that sets no context: nothing carried over.
    with psycopg.connect(bouncer, autocommit=True) as other:
        assert other.execute("SELECT current_setting('pghistory.context_id', true)").fetchone()[0] in (None, "")
        other.execute("UPDATE patients_subject SET prior_lines = prior_lines + 1 WHERE id = %s", [subject.pk])

    # A result's insert is the row itself, read through the results' audit trail view (assays 0005).
    [written] = context_of("assays_resulttrail", "e.subject_id = %s", [subject.pk])
    assert written["service_account"] == "Lab behind PgBouncer"
    assert written["source"] == "api" and written["url"] == "/api/v1/results/"
    updates = context_of("patients_subjectevent", "e.id = %s AND e.pgh_label = 'update'", [subject.pk])
    assert updates[-1] is None  # a write outside the application: no application context
