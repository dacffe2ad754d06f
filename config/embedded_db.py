"""The embedded PostgreSQL server used when DATABASE_URL is not set.

The server's data lives under ``var/pgdata`` in the project and is kept across restarts. The
server listens on a Unix socket only, so two checkouts on one machine never collide.

pgserver keeps the ids of the processes holding a handle on the server in ``.handle_pids.json``
and reads the server's ``postmaster.pid``. A process killed while it rewrites the handle file leaves
it empty, and pgserver then fails on every start; a handle file naming dead processes makes its
stop do nothing. Before each start and stop this module repairs both files and says what it did.

    python -m config.embedded_db start [PGDATA]   start (or reuse) the server, print its URL
    python -m config.embedded_db stop [PGDATA]    stop it (``make db-stop``), whatever the files say
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import psutil

logging.getLogger("pgserver").setLevel(logging.WARNING)

HANDLE_FILE = ".handle_pids.json"
POSTMASTER_FILE = "postmaster.pid"
POSTMASTER_LINES = 8


def default_pgdata(base_dir: Path) -> Path:
    return base_dir / "var" / "pgdata"


def _prepare_runtime_dir(pgdata: Path) -> None:
    """pgserver's lock file lives in the runtime dir, read when pgserver is first imported."""
    base_dir = pgdata.parent.parent
    os.environ.setdefault("XDG_RUNTIME_DIR", str(base_dir / "var" / "run"))
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    runtime.mkdir(parents=True, exist_ok=True)
    if runtime.is_relative_to(base_dir):
        runtime.chmod(0o700)  # the runtime-dir convention


def _write_atomically(path: Path, text: str) -> None:
    """A signal between truncating and writing can no longer leave the file empty."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    os.replace(partial, path)


def _atomic_put(self: object, values: list[int]) -> None:
    _write_atomically(self.path, json.dumps(values))  # type: ignore[attr-defined]


def repair_handle_file(pgdata: Path) -> list[str]:
    """Make ``.handle_pids.json`` a JSON list of live process ids; return what was repaired."""
    path = pgdata / HANDLE_FILE
    if not path.exists():
        return []
    try:
        pids = json.loads(path.read_text())
        if not isinstance(pids, list) or not all(isinstance(pid, int) for pid in pids):
            raise ValueError("not a list of process ids")
    except ValueError:
        _write_atomically(path, "[]")
        return [f"Repaired {path}: it was empty or corrupt; reset to no handles."]
    live = [pid for pid in pids if psutil.pid_exists(pid)]
    if live == pids:
        return []
    _write_atomically(path, json.dumps(live))
    dead = ", ".join(str(pid) for pid in pids if pid not in live)
    return [f"Repaired {path}: dropped process(es) no longer running: {dead}."]


def running_postmaster(pgdata: Path) -> int | None:
    """The pid of the server running on ``pgdata``, or None (a stale postmaster.pid is removed)."""
    path = pgdata / POSTMASTER_FILE
    try:
        lines = path.read_text().splitlines()
        pid = int(lines[0])
    except (FileNotFoundError, IndexError, ValueError):
        pid = None
    if pid is not None and _is_postgres(pid) and len(lines) == POSTMASTER_LINES:
        return pid
    return None


def _is_postgres(pid: int) -> bool:
    try:
        return psutil.Process(pid).name() == "postgres"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def repair_postmaster_file(pgdata: Path) -> list[str]:
    """Remove a postmaster.pid that pgserver cannot read or that names no running server."""
    path = pgdata / POSTMASTER_FILE
    if not path.exists() or running_postmaster(pgdata) is not None:
        return []
    if _server_status(pgdata) == 0:  # pg_ctl sees a server: leave its file alone
        return []
    path.unlink(missing_ok=True)
    return [f"Removed stale {path}: no server was running on it."]


def _pg_ctl(pgdata: Path, *args: str) -> subprocess.CompletedProcess[str]:
    from pgserver._commands import POSTGRES_BIN_PATH

    # As root, pgserver runs the server as its own system user "pgserver"; pg_ctl refuses to run as root.
    user = "pgserver" if os.geteuid() == 0 else None
    return subprocess.run([str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), *args], capture_output=True,
                          text=True, timeout=120, user=user)


def _server_status(pgdata: Path) -> int:
    return _pg_ctl(pgdata, "status").returncode


def repair(pgdata: Path) -> list[str]:
    """Repair both files under pgserver's own inter-process lock (no handle is added meanwhile)."""
    _prepare_runtime_dir(pgdata)
    from pgserver import PostgresServer

    with PostgresServer._lock:
        return repair_handle_file(pgdata) + repair_postmaster_file(pgdata)


def start_server(pgdata: Path) -> str:
    """Start (or reuse) the server on ``pgdata`` after repairing its files; return its URL."""
    pgdata.mkdir(parents=True, exist_ok=True)
    for message in repair(pgdata):
        print(f"embedded PostgreSQL: {message}", file=sys.stderr)
    import pgserver  # imported late: only the embedded mode needs it
    from pgserver.utils import DiskList

    DiskList.put = _atomic_put  # type: ignore[method-assign]
    # cleanup_mode=None: the server outlives this process, so `make run` restarts are quick and
    # test runs and the dev server can share it. `make db-stop` stops it.
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    return server.get_uri("postgres")


def stop_server(pgdata: Path) -> list[str]:
    """Stop the server on ``pgdata`` with pg_ctl (killing it if pg_ctl fails); return what was done."""
    messages = repair(pgdata)
    pid = running_postmaster(pgdata)
    if pid is None and _server_status(pgdata) != 0:
        return [*messages, f"No embedded server was running on {pgdata}."]
    result = _pg_ctl(pgdata, "-m", "fast", "-w", "stop")
    if result.returncode == 0:
        messages.append(f"Stopped the embedded server on {pgdata} (pid {pid}).")
    else:
        messages.append(f"pg_ctl could not stop pid {pid} ({result.stderr.strip()}); terminating it.")
        if pid is not None:
            _terminate(pid)
    if (pgdata / HANDLE_FILE).exists():
        _write_atomically(pgdata / HANDLE_FILE, "[]")  # no handle outlives the server
    return messages


def _terminate(pid: int) -> None:
    try:
        process = psutil.Process(pid)
        process.terminate()
        process.wait(10)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        process.kill()


def embedded_database_url(base_dir: Path) -> str:
    """Start (or reuse) the embedded server under ``base_dir/var`` and return its connection URL."""
    return start_server(default_pgdata(base_dir))


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"start", "stop"}:
        print(__doc__, file=sys.stderr)
        return 2
    pgdata = Path(argv[1] if len(argv) > 1 else default_pgdata(Path(__file__).resolve().parent.parent)).resolve()
    if argv[0] == "start":
        print(start_server(pgdata))
        return 0
    for message in stop_server(pgdata):
        print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
