"""The embedded PostgreSQL server used when DATABASE_URL is not set.

The server's data lives under ``var/pgdata`` in the project and is kept across restarts. The
server listens on a Unix socket only, so two checkouts on one machine never collide.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logging.getLogger("pgserver").setLevel(logging.WARNING)


def embedded_database_url(base_dir: Path) -> str:
    """Start (or reuse) the embedded server and return its connection URL."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(base_dir / "var" / "run"))
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    runtime.mkdir(parents=True, exist_ok=True)
    if runtime.is_relative_to(base_dir):
        runtime.chmod(0o700)  # the runtime-dir convention (pgserver's lock file lives there)
    import pgserver  # imported late: only the embedded mode needs it

    pgdata = base_dir / "var" / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process, so `make run` restarts are quick and
    # test runs and the dev server can share it. `make db-stop` stops it.
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    return server.get_uri("postgres")
