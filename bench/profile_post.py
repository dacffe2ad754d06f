"""Where a single-result POST spends its time: its queries (each timed) and its Python (cProfile).

    .venv/bin/python bench/profile_post.py [--posts 300] [--top 25]

Uses the benchmark database of ``bench/ingest.py`` (demo trial, a service-account token of site BJ01) and
posts in-process through Django's test client: the whole middleware and DRF stack, without gunicorn and
the network. After a warm-up, one post is traced query by query, then ``--posts`` posts run under cProfile.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from ingest import database_url, make_rows, prepare  # noqa: E402  (bench/ingest.py, which adds ROOT too)


class QueryTimer:
    """A connection execute wrapper recording (milliseconds, SQL) of every statement."""

    def __init__(self) -> None:
        self.queries: list[tuple[float, str]] = []

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.queries.append(((time.perf_counter() - start) * 1000, " ".join(str(sql).split())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=300)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    env = {"DATABASE_URL": database_url(), "DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "bench-" + "x" * 50,
           "DJANGO_ALLOWED_HOSTS": "testserver", "DJANGO_SECURE_SSL_REDIRECT": "0", "DJANGO_LOG_LEVEL": "ERROR"}
    facts = prepare({**os.environ, **env})
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connection
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Token {facts['token']}")
    rows = make_rows(args.posts + 101, f"profile{int(time.time())}", facts["subjects"])

    def post(row: dict[str, str]) -> None:
        response = client.post("/api/v1/results/", data=json.dumps(row), content_type="application/json")
        assert response.status_code in (200, 201), response.content

    for row in rows[:100]:
        post(row)  # warm-up: the draws exist, caches are filled
    timer = QueryTimer()
    start = time.perf_counter()
    with connection.execute_wrapper(timer):
        post(rows[100])
    total = (time.perf_counter() - start) * 1000
    print(f"one post: {total:.2f} ms in all, {len(timer.queries)} statements, "
          f"{sum(ms for ms, _ in timer.queries):.2f} ms in the database (round trips included)")
    for ms, sql in timer.queries:
        print(f"  {ms:6.2f} ms  {sql[:150]}")
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for row in rows[101:]:
        post(row)
    profiler.disable()
    print(f"\n{args.posts} posts: {(time.perf_counter() - start) * 1000 / args.posts:.2f} ms a post under cProfile")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())


if __name__ == "__main__":
    main()
