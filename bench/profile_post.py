"""Where a result POST spends its time: its queries (each timed), its Python (cProfile) and, for a batch,
each stage's cost per row.

    .venv/bin/python bench/profile_post.py [--posts 300] [--top 25]          # single-result posts
    .venv/bin/python bench/profile_post.py --batch 1000 [--posts 20]          # batches of 1,000 results

Uses the benchmark database of ``bench/ingest.py`` (demo trial, a service-account token of site BJ01) and
posts in-process through Django's test client: the whole middleware and DRF stack, without gunicorn and
the network. After a warm-up, one post is traced statement by statement; then ``--posts`` posts are
timed without a profiler, with the time spent waiting on PostgreSQL (every psycopg wait: round trips,
the COPY's flushes, COMMIT) told apart from Python's; then the same number run under cProfile. In batch
mode the profile is summed into stages (decode, checks, unit conversion, flag and grade, building rows,
COPY formatting, waiting on PostgreSQL) in microseconds per row.
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

from ingest import database_url, make_rows, prepare, seed_history  # noqa: E402  (bench/ingest.py, which adds ROOT too)

# Stages of a batch, as (label, functions whose cumulative time is the stage's). Each function's time
# includes the functions it calls; "building rows" subtracts the stages it contains.
STAGES = [
    ("the read: subjects, locks, current results, draws, visits (one query)", [("assays/services.py", "_read")]),
    ("decode the JSON body (msgspec) into rows", [("assays/api.py", "_decode_rows")]),
    ("text checks (lengths, NUL)", [("assays/services.py", "_check_text")]),
    ("row checks (catalogue, unit, time, consent window)", [("assays/services.py", "_check_row")]),
    ("  of which value parsing and unit conversion", [("assays/services.py", "_parse_value")]),
    ("draws: match, visit windows", [("assays/services.py", "_draws")]),
    ("validating and planning (_build, less the stages above)", [("assays/services.py", "_build")]),
    ("flag and CTCAE grade (made as the rows are written)", [("assays/services.py", "__call__")]),
    ("making the rows (_records, less flag and grade)", [("assays/services.py", "_records")]),
    ("the write in all (draws, COPY or INSERT; making, formatting and sending the rows, the server's work; "
     "without COMMIT)", [("assays/services.py", "_write_all")]),
    ("  of which formatting: psycopg write_row / the copy text", [("psycopg/_copy.py", "write_row"),
                                                                   ("assays/services.py", "_copy_line")]),
]


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


class WaitTimer:
    """Time spent in psycopg's ``Connection.wait`` (the client waiting on the server or the socket), and
    how many waits: every round trip, the COPY's flushes, BEGIN and COMMIT included."""

    def __init__(self) -> None:
        import psycopg

        self.seconds, self.count = 0.0, 0
        self.names: list[str] | None = None  # the waits' generators, while tracing one post
        self._original = psycopg.Connection.wait
        timer = self

        def wait(conn: Any, gen: Any, *args: Any, **kwargs: Any) -> Any:
            if timer.names is not None:
                timer.names.append(getattr(gen, "__name__", type(gen).__name__))
            start = time.perf_counter()
            try:
                return timer._original(conn, gen, *args, **kwargs)
            finally:
                timer.seconds += time.perf_counter() - start
                timer.count += 1

        psycopg.Connection.wait = wait  # type: ignore[method-assign,assignment]

    def reset(self) -> None:
        self.seconds, self.count = 0.0, 0


def stage_costs(stats: pstats.Stats, rows: int) -> list[tuple[str, float]]:
    """(label, µs per row) of each stage, summed over the functions named for it."""
    cumulative: dict[tuple[str, str], float] = {}
    waits = 0.0
    for (filename, _line, name), (_cc, _nc, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for _label, functions in STAGES + [("", [("assays/api.py", "create")])]:
            for part, wanted in functions:
                if name == wanted and filename.endswith(part):
                    cumulative[(part, wanted)] = cumulative.get((part, wanted), 0.0) + cumtime
        if "wait" in name and ("psycopg" in filename or filename == "~"):
            waits += tottime  # psycopg's C wait (wait_c) and its Python fallbacks
    costs = [(label, sum(cumulative.get(f, 0.0) for f in functions) * 1e6 / rows) for label, functions in STAGES]
    build = next(i for i, (label, _f) in enumerate(STAGES) if label.startswith("validating"))
    inner = sum(cost for label, cost in costs[2:build] if not label.startswith(" "))  # the stages within _build
    costs[build] = (costs[build][0], costs[build][1] - inner)
    making = build + 2  # _records calls the flag and grade
    costs[making] = (costs[making][0], costs[making][1] - costs[build + 1][1])
    costs.append(("waiting on PostgreSQL (psycopg waits, under the profiler)", waits * 1e6 / rows))
    costs.append(("the view's create() in all", cumulative.get(("assays/api.py", "create"), 0.0) * 1e6 / rows))
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=None, help="posts timed and profiled (300; 20 in batch mode)")
    parser.add_argument("--batch", type=int, default=1, help="results per post (1: single-result posts)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    posts = args.posts or (300 if args.batch == 1 else 20)
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
    rows = make_rows((2 * posts + 101) * size, f"profile{int(time.time())}", facts["subjects"])
    bodies = [json.dumps(rows[i]) if size == 1 else json.dumps({"results": rows[i:i + size]})
              for i in range(0, len(rows), size)]

    def post(body: str) -> None:
        response = client.post("/api/v1/results/", data=body, content_type="application/json")
        assert response.status_code in (200, 201), response.content

    for body in bodies[:100 if size == 1 else 3]:
        post(body)  # warm-up: the draws exist, caches are filled
    bodies = bodies[100 if size == 1 else 3:]
    timer, waits = QueryTimer(), WaitTimer()
    waits.names = []
    start = time.perf_counter()
    with connection.execute_wrapper(timer):
        post(bodies.pop())
    total = (time.perf_counter() - start) * 1000
    print(f"one post of {size} result(s): {total:.2f} ms in all, {len(timer.queries)} statements through Django "
          f"(COPY, BEGIN, COMMIT and the connection's health check are not among them), "
          f"{sum(ms for ms, _ in timer.queries):.2f} ms in them")
    for ms, sql in timer.queries:
        print(f"  {ms:6.2f} ms  {sql[:150]}")
    print(f"  {len(waits.names)} waits on PostgreSQL (psycopg generators): {', '.join(waits.names)}")
    waits.names = None
    waits.reset()
    timed, profiled = bodies[:posts], bodies[posts:2 * posts]
    start = time.perf_counter()
    for body in timed:
        post(body)
    elapsed = time.perf_counter() - start
    per_post, per_row = elapsed * 1000 / posts, elapsed * 1e6 / (posts * size)
    db_share = waits.seconds / elapsed
    print(f"\n{posts} posts without a profiler: {per_post:.2f} ms a post, {per_row:.1f} µs a row; waiting on "
          f"PostgreSQL {waits.seconds * 1000 / posts:.2f} ms a post ({db_share:.0%}; {waits.count / posts:.1f} waits "
          f"a post), Python {(elapsed - waits.seconds) * 1000 / posts:.2f} ms a post "
          f"({(elapsed - waits.seconds) * 1e6 / (posts * size):.1f} µs a row)")

    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for body in profiled:
        post(body)
    profiler.disable()
    print(f"\n{posts} posts under cProfile: {(time.perf_counter() - start) * 1000 / posts:.2f} ms a post")
    stats = pstats.Stats(profiler)
    if size > 1:
        print("\nstages, µs per row under cProfile (the profiler inflates Python's share several fold):")
        for label, cost in stage_costs(stats, posts * size):
            print(f"  {cost:8.2f}  {label}")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.top)
    print(out.getvalue())


if __name__ == "__main__":
    main()
