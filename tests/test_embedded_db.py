"""The embedded server starts and stops whatever a killed process left in its handle file.

These tests run their own server on a temporary data directory: the suite's own server in var/
must keep running under them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent


def embedded(action: str, pgdata: Path) -> subprocess.CompletedProcess[str]:
    """``python -m config.embedded_db <action>``, as `make db-stop` and a fresh process would run it."""
    return subprocess.run([sys.executable, "-m", "config.embedded_db", action, str(pgdata)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def start(pgdata: Path) -> str:
    result = embedded("start", pgdata)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def query_works(url: str) -> bool:
    with psycopg.connect(url) as connection:
        return connection.execute("SELECT 1").fetchone() == (1,)


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture(scope="module")
def pgdata() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="cart-embedded-"))
    data = base / "var" / "pgdata"
    data.parent.mkdir(parents=True)
    start(data)
    yield data
    embedded("stop", data)
    shutil.rmtree(base, ignore_errors=True)


HANDLE_FILES = {"empty": lambda: "", "corrupt": lambda: '[12, "', "dead pid": lambda: f"[{dead_pid()}]"}


@pytest.mark.parametrize("content", HANDLE_FILES.values(), ids=HANDLE_FILES.keys())
def test_a_running_server_is_reused_whatever_the_handle_file_says(pgdata, content):
    start(pgdata)
    (pgdata / ".handle_pids.json").write_text(content())
    result = embedded("start", pgdata)
    assert result.returncode == 0, result.stderr
    assert f"Repaired {pgdata / '.handle_pids.json'}" in result.stderr
    assert query_works(result.stdout.strip())


@pytest.mark.parametrize("content", HANDLE_FILES.values(), ids=HANDLE_FILES.keys())
def test_a_stopped_server_starts_whatever_the_handle_file_says(pgdata, content):
    start(pgdata)
    assert "Stopped the embedded server" in embedded("stop", pgdata).stdout
    (pgdata / ".handle_pids.json").write_text(content())
    assert query_works(start(pgdata))


@pytest.mark.parametrize("content", HANDLE_FILES.values(), ids=HANDLE_FILES.keys())
def test_db_stop_stops_the_server_whatever_the_handle_file_says(pgdata, content):
    url = start(pgdata)
    (pgdata / ".handle_pids.json").write_text(content())
    result = embedded("stop", pgdata)
    assert result.returncode == 0
    assert "Repaired" in result.stdout and "Stopped the embedded server" in result.stdout
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=3)


def test_db_stop_says_when_no_server_was_running(pgdata):
    start(pgdata)
    embedded("stop", pgdata)
    result = embedded("stop", pgdata)
    assert result.returncode == 0
    assert "No embedded server was running" in result.stdout


def test_a_stale_postmaster_pid_is_removed_and_the_server_starts(pgdata):
    start(pgdata)
    embedded("stop", pgdata)
    (pgdata / "postmaster.pid").write_text(f"{dead_pid()}\n")
    result = embedded("start", pgdata)
    assert result.returncode == 0, result.stderr
    assert "Removed stale" in result.stderr
    assert query_works(result.stdout.strip())
