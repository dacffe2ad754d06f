"""What a batch POST costs in CPU, on both sides: the Django process's and its PostgreSQL backend's.

    .venv/bin/python bench/post_cpu.py [--posts 30] [--batch 1000]

Uses the benchmark database of ``bench/ingest.py`` and posts in-process through Django's test client (the
whole middleware and DRF stack, without gunicorn), one batch after another. For each post it reads this
process's CPU time and the CPU time of the connection's PostgreSQL backend (``/proc/<pid>/stat``, in clock
ticks, so only the mean over many posts means anything), besides the wall time. CPU time hardly moves with
what else the machine runs, unlike wall time: run it from two checkouts in turn to compare code.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from ingest import database_url, make_rows, prepare, seed_history  # noqa: E402  (bench/ingest.py, which adds ROOT too)

TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    """Seconds of CPU (user and system) the PostgreSQL backend ``pid`` has used (same machine only)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    env = {"DATABASE_URL": database_url(), "DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "bench-" + "x" * 50,
           "DJANGO_ALLOWED_HOSTS": "testserver", "DJANGO_SECURE_SSL_REDIRECT": "0", "DJANGO_LOG_LEVEL": "ERROR"}
    facts = prepare({**os.environ, **env})
    seed_history(env["DATABASE_URL"], facts)  # the draws of a trial with history, as bench/ingest.py
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connection
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Token {facts['token']}")
    size = args.batch
    rows = make_rows((args.posts + 5) * size, f"cpu{int(time.time())}", facts["subjects"])
    bodies = [json.dumps({"results": rows[i:i + size]}) for i in range(0, len(rows), size)]

    def post(body: str) -> None:
        response = client.post("/api/v1/results/", data=body, content_type="application/json")
        assert response.status_code in (200, 201), response.content

    def backend() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return int(cursor.fetchone()[0])

    for body in bodies[:5]:
        post(body)  # warm-up: the draws exist, caches are filled
    walls, python, server = [], [], []
    for body in bodies[5:]:
        pid = backend()
        server_start, python_start, start = backend_cpu(pid), time.process_time(), time.perf_counter()
        post(body)
        wall, python_end = time.perf_counter() - start, time.process_time()
        if backend() != pid:
            continue  # the connection was replaced (CONN_MAX_AGE): not measured
        walls.append(wall)
        python.append(python_end - python_start)
        server.append(backend_cpu(pid) - server_start)
    n = len(walls)
    print(f"{n} posts of {size} results: wall median {statistics.median(walls) * 1e3:.2f} ms; CPU a post (mean): "
          f"Django process {sum(python) / n * 1e3:.2f} ms, PostgreSQL backend {sum(server) / n * 1e3:.2f} ms "
          f"(ticks of {1000 / TICK:.0f} ms)")


if __name__ == "__main__":
    main()
