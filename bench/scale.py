"""Registry scale benchmark: the reads a site and a sponsor make, on a registry-sized trial, each against a
primary-key lookup measured in the same run, with its query count and the plan of its hot query.

    .venv/bin/python bench/scale.py [--subjects 20000] [--results 5000000] [--reps 15] [--keep] [--reuse]
    .venv/bin/python bench/scale.py --results 20000000          # the full size
    .venv/bin/python bench/scale.py --subjects 2000 --results 500000   # a quick run

Builds a throwaway database (``cart_bench_scale``, or $BENCH_SCALE_DATABASE, on the embedded server or on
$BENCH_DATABASE_URL): the demo
trial (``load_demo``), then ``--subjects`` subjects cloned by COPY from the demo's treated subject, spread over
the trial's sites, one lab draw per 40 results (about one a day per subject) and ``--results`` results (COPY,
audit triggers on; bench/export.py's builder). The demo's treated subject (BJ01-0001, with its whole course)
gets its share of draws and results, so its timeline is read at full size.

Then, through Django's test Client (the whole middleware stack, DEBUG off), as the Beijing coordinator:
- the baseline: one row of the results table by primary key (``SELECT ... WHERE id = %s``);
- a subject's timeline through the API: the subject and each list of its on-study records (study day and
  course day on every row), and the admin subject page;
- result lists filtered by subject, analyte, collection date range, and all three;
- the trial summary (``GET /api/v1/trials/{code}/summary/``) when that endpoint exists;
- the CSV export in a subprocess of its own (peak RSS, ``ru_maxrss``).
For each: the median time, its ratio to the baseline, the number of queries, and EXPLAIN (ANALYZE, BUFFERS)
of its slowest query with the indexes it uses (a sequential scan of a large table is flagged). The database
is dropped at the end unless ``--keep``; ``--reuse`` measures a kept database again without rebuilding it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export as export_bench  # noqa: E402  (bench/export.py: the builder's helpers and the export measure)

ROOT = export_bench.ROOT
DB_NAME = os.environ.get("BENCH_SCALE_DATABASE", "cart_bench_scale")  # two runs at once need two names
RESULTS_PER_DRAW = export_bench.RESULTS_PER_DRAW
ANALYTES = export_bench.ANALYTES
TEMPLATE = "BJ01-0001"
LARGE_TABLES = ("assays_result", "assays_labdraw", "patients_subject", "assays_resultevent", "assays_labdrawevent")
TIMELINE_TARGET_MS = 50.0
# COPY in statements of this many rows, as ingestion batches arrive. One COPY of 125,000 draws was still running
# after ten minutes: the draws' row-level audit trigger costs more per row the more rows the statement inserts
# (EXPLAIN ANALYZE of one INSERT: 1.1 ms a row for 4,000 draws, 3.7 ms a row for 20,000).
DRAWS_PER_COPY, RESULTS_PER_COPY = 10_000, 100_000


def recreate_database(url: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    return export_bench.with_db(url, DB_NAME)


def drop_database(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


# --- building the registry (in a subprocess: ``--build``) --------------------------------------------


def build(subjects: int, results: int) -> dict[str, Any]:
    """Clone the demo's treated subject over the trial's sites, then COPY draws and results."""
    import django

    django.setup()
    from django.db import connection

    from assays.models import Analyte, LabDraw, Result
    from patients.models import Subject
    from trials.models import TrialSite

    template = Subject.objects.select_related("trial").get(code=TEMPLATE)
    sites = list(TrialSite.objects.filter(trial=template.trial).order_by("site__code").values_list("site_id",
                                                                                                     flat=True))
    analytes = [pk for pk, _code in Analyte.objects.filter(code__in=ANALYTES).values_list("pk", "code")]
    start = time.perf_counter()
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor  # psycopg's own, for COPY
        row = export_bench._template(cursor, Subject._meta.db_table, "id = %s", [template.pk])
        columns = [c for c in row if c != "id"]

        def subject_row(i: int) -> list[Any]:
            values = {**row, "code": f"BX-{i:05d}", "screening_number": "", "site_id": sites[i % len(sites)]}
            return [values[c] for c in columns]

        export_bench._copy(cursor, Subject._meta.db_table, columns, (subject_row(i) for i in range(subjects)))
        owners = [(template.pk, template.site_id), *Subject.objects.filter(code__startswith="BX-")
                  .order_by("code").values_list("pk", "site_id")]
        user_id = export_bench._any_user(cursor)
        draws = _copy_draws(cursor, LabDraw._meta.db_table, owners, max(1, results // RESULTS_PER_DRAW), user_id)
        _copy_results(cursor, Result._meta.db_table, draws, analytes, results, user_id)
        cursor.execute("ANALYZE")
    return {"trial": template.trial.code, "subjects": subjects, "draws": len(draws), "results": results,
            "build_seconds": round(time.perf_counter() - start, 1)}


def _copy_draws(cursor: Any, table: str, owners: list[tuple[int, int]], draws: int,
                user_id: int) -> list[tuple[int, int, int]]:
    """A draw a week per subject from 1 June 2026 (round-robin over subjects, each on a weekday of its own, so
    that a day holds about a seventh of a week's draws); returns (id, subject, site)."""
    when, now = dt.datetime(2026, 6, 1, 8, tzinfo=dt.UTC), dt.datetime.now(dt.UTC)

    def collected(d: int) -> dt.datetime:
        return when + dt.timedelta(days=7 * (d // len(owners)) + d % len(owners) % 7)

    for chunk in chunks(draws, DRAWS_PER_COPY):
        export_bench._copy(cursor, table, ["created_at", "updated_at", "subject_id", "site_id", "accession_number",
                                           "specimen", "collected_at", "visit_id", "recorded_by_id"],
                           ((now, now, *owners[d % len(owners)], f"BX-{d:08d}", "pb", collected(d), None, user_id)
                            for d in chunk))
    cursor.execute(f"SELECT id, subject_id, site_id FROM {table} WHERE accession_number LIKE 'BX-%%' "
                   "ORDER BY accession_number")
    return list(cursor.fetchall())


def _copy_results(cursor: Any, table: str, draws: list[tuple[int, int, int]], analytes: list[int], results: int,
                  user_id: int) -> None:
    now = dt.datetime.now(dt.UTC)

    def result_row(r: int) -> tuple[Any, ...]:
        draw, subject, site = draws[r // RESULTS_PER_DRAW % len(draws)]
        value = (r % 997) / 10
        return (draw, subject, site, analytes[r % len(analytes)], f"BX-{r}", f"{value:.1f}", "", value, "", "N",
                None, "final", False, "", user_id, now)

    for chunk in chunks(results, RESULTS_PER_COPY):
        export_bench._copy(cursor, table, ["draw_id", "subject_id", "site_id", "analyte_id", "source_ref",
                                           "value_text", "unit_text", "value", "censored", "flag", "ctcae_grade",
                                           "status", "superseded", "correction_reason", "recorded_by_id",
                                           "recorded_at"], (result_row(r) for r in chunk))


def chunks(total: int, size: int) -> list[range]:
    return [range(start, min(start + size, total)) for start in range(0, total, size)]


# --- measuring (in a subprocess: ``--measure``) ---------------------------------------------------------


def timed(run: Callable[[], Any], reps: int) -> tuple[float, Any]:
    """Median milliseconds of ``reps`` runs after one warm-up run, and the last run's value."""
    value = run()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        value = run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), value


def pk_lookup(client: Any, reps: int) -> dict[str, Any]:
    """The baselines: one result by primary key in SQL, and through the API (the same stack as every page)."""
    from django.db import connection

    from assays.models import Result

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT max(id) FROM {Result._meta.db_table} WHERE site_id = "
                       f"(SELECT site_id FROM patients_subject WHERE code = %s)", [TEMPLATE])
        middle = cursor.fetchone()[0] // 2
        sql = f"SELECT * FROM {Result._meta.db_table} WHERE id = %s"
        sql_ms, _ = timed(lambda: (cursor.execute(sql, [middle]), cursor.fetchall()), reps * 10)
    while not Result.objects.filter(pk=middle, site__code="BJ01").exists():
        middle -= 1
    return {"name": "baseline: a result by id", "sql_ms": sql_ms,
            **measure_get(client, f"/api/v1/results/{middle}/", reps)}


def explain(sql: str) -> tuple[list[str], list[str], list[str]]:
    """The plan of ``sql`` (EXPLAIN ANALYZE, BUFFERS), the indexes it uses and the large tables it scans whole."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        plan = [line for (line,) in cursor.fetchall()]
    text = "\n".join(plan)
    indexes = sorted(set(re.findall(r"Index (?:Only )?Scan(?: Backward)? using (\S+)", text)
                         + re.findall(r"Bitmap Index Scan on (\S+)", text)))
    seq = sorted({t for t in re.findall(r"Seq Scan on (\S+)", text) if t in LARGE_TABLES})
    return plan, indexes, seq


def measure_get(client: Any, url: str, reps: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    ms, response = timed(lambda: client.get(url), reps)
    if response.status_code != 200:
        return {"url": url, "status": response.status_code, "ms": ms}
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    db_ms = sum(float(q["time"]) for q in queries.captured_queries) * 1000
    # Every query that reads a large table is explained; the slowest (by its own execution time) is shown.
    large = [q["sql"] for q in queries.captured_queries if any(f'"{t}"' in q["sql"] for t in LARGE_TABLES)]
    plans = [(sql, *explain(sql)) for sql in large]
    if not plans:
        return {"url": url, "status": 200, "ms": ms, "db_ms": db_ms, "queries": len(queries), "hot_sql": "",
                "plan": [], "indexes": [], "seq_scans": []}
    hot_sql, plan, _, _ = max(plans, key=lambda p: execution_ms(p[1]))
    return {"url": url, "status": 200, "ms": ms, "db_ms": db_ms, "queries": len(queries), "hot_sql": hot_sql,
            "plan": plan, "indexes": sorted({i for p in plans for i in p[2]}),
            "seq_scans": sorted({t for p in plans for t in p[3]})}


def execution_ms(plan: list[str]) -> float:
    found = [float(m.group(1)) for line in plan if (m := re.match(r"Execution Time: ([\d.]+) ms", line))]
    return found[0] if found else 0.0


def measure(reps: int, trial_code: str) -> dict[str, Any]:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client, override_settings

    # Production settings, but static files by name: the admin page is rendered without collectstatic.
    override_settings(STORAGES={**settings.STORAGES, "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}).enable()

    from patients.models import Subject

    user = get_user_model().objects.get(username="coord.bj")
    client = Client()
    client.force_login(user)
    template = Subject.objects.get(code=TEMPLATE)
    clone = Subject.objects.filter(code__startswith="BX-", site_id=template.site_id).order_by("code")[7]
    return {"baseline": pk_lookup(client, reps), "pages": [
        {"group": "timeline", "name": name, **measure_get(client, url, reps)}
        for name, url in timeline_urls(template)] + [
        {"group": "results", "name": name, **measure_get(client, url, reps)}
        for name, url in result_urls(clone)] + [
        {"group": "summary", "name": "trial summary", **measure_get(client, summary_url(trial_code), reps)}]}


def timeline_urls(subject: Any) -> list[tuple[str, str]]:
    """What a client reads to draw one subject's timeline, and the admin's subject page."""
    parts = ["infusions", "lymphodepletion-courses", "adverse-events", "medications", "responses", "follow-ups",
             "lab-draws"]
    return [("subject", f"/api/v1/subjects/{subject.code}/"),
            ("transitions", f"/api/v1/subjects/{subject.code}/transitions/"),
            *((part, f"/api/v1/{part}/?subject={subject.code}") for part in parts),
            ("results (page 1)", f"/api/v1/results/?subject={subject.code}"),
            ("admin subject page", f"/admin/patients/subject/{subject.pk}/change/")]


def result_urls(subject: Any) -> list[tuple[str, str]]:
    day = "collected_after=2026-06-03T00:00:00Z&collected_before=2026-06-04T00:00:00Z"
    weeks = "collected_after=2026-06-01T00:00:00Z&collected_before=2026-06-15T00:00:00Z"
    return [("by subject", f"/api/v1/results/?subject={subject.code}"),
            ("by analyte", "/api/v1/results/?analyte=CRP"),
            ("by date range (a day)", f"/api/v1/results/?{day}"),
            ("subject+analyte+2 weeks", f"/api/v1/results/?subject={subject.code}&analyte=CRP&{weeks}")]


# The trial summary (summaries app). The clones are not infused: it reads the site's subjects, and the results
# of its treated demo subjects only (bench/summary.py measures a summary of 500 treated subjects).
def summary_url(trial_code: str) -> str:
    return f"/api/v1/trials/{trial_code}/summary/"


# --- the driver ---------------------------------------------------------------------------------------


def report(measured: dict[str, Any], export: dict[str, Any] | None) -> None:
    baseline = measured["baseline"]
    base = baseline["ms"]
    print(f"Baseline: one result by primary key through the API {base:.1f} ms ({baseline['queries']} queries), "
          f"in SQL alone {baseline['sql_ms']:.3f} ms (medians).")
    print(f"{'page / endpoint':<28} {'ms':>8} {'x pk':>6} {'db ms':>7} {'queries':>7}  indexes used (large tables)")
    for page in measured["pages"]:
        if page["status"] != 200:
            note = "not available yet (summaries app): skipped" if page["group"] == "summary" else "FAILED"
            print(f"{page['name']:<28} HTTP {page['status']} {page['url']}: {note}")
            continue
        flag = f"  SEQ SCAN: {', '.join(page['seq_scans'])}" if page["seq_scans"] else ""
        print(f"{page['name']:<28} {page['ms']:8.1f} {page['ms'] / base:6.1f} {page['db_ms']:7.1f} "
              f"{page['queries']:7d}  "
              f"{', '.join(page['indexes']) or '-'}{flag}")
    timeline = [p for p in measured["pages"] if p["group"] == "timeline" and p["status"] == 200]
    slowest = max(timeline, key=lambda p: p["ms"])
    print(f"Timeline: slowest request {slowest['name']} {slowest['ms']:.1f} ms (target < {TIMELINE_TARGET_MS:.0f} ms "
          f"each: {'met' if slowest['ms'] < TIMELINE_TARGET_MS else 'NOT met'}); all {len(timeline)} requests "
          f"{sum(p['ms'] for p in timeline):.1f} ms.")
    if export:
        print(f"CSV export (a worker's subprocess): {export['seconds']:.1f} s, peak RSS "
              f"{export['peak_rss_mb']:.0f} MB, peak Python {export['peak_python_mb']:.1f} MB, "
              f"{export['queries']} queries, {export['bytes']:,} bytes.")
    print("\nPlans (EXPLAIN ANALYZE, BUFFERS) of each page's slowest query on a large table:")
    for page in [baseline, *measured["pages"]]:
        if page["status"] == 200 and page["plan"]:
            sql = page["hot_sql"]
            sql = sql if len(sql) < 400 else f"{sql[:200]} ... {sql[-200:]}"
            print(f"\n-- {page['name']}: {page['url']}\n{sql}\n" + "\n".join(page["plan"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=20_000)
    parser.add_argument("--results", type=int, default=5_000_000)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="Keep the throwaway database")
    parser.add_argument("--reuse", action="store_true", help="Measure a kept database again (no build)")
    parser.add_argument("--no-export", action="store_true", help="Skip the CSV export's memory")
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if args.build:
        print(json.dumps(build(args.subjects, args.results)))
    elif args.measure:
        print(json.dumps(measure(args.reps, args.trial)))
    else:
        run(args)


def child(env: dict[str, str], *args: str) -> dict[str, Any]:
    import subprocess

    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> None:
    base = export_bench.admin_url()
    url = export_bench.with_db(base, DB_NAME) if args.reuse else recreate_database(base)
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_DEBUG": "0", "DJANGO_ALLOWED_HOSTS": "testserver",
           "DJANGO_SECURE_SSL_REDIRECT": "0", "DJANGO_SECRET_KEY": "bench-only-" + "x" * 50,
           "DJANGO_EXPORTS_DIR": str(ROOT / "var" / "bench-exports")}
    try:
        if not args.reuse:
            export_bench.manage(env, "migrate", "--no-input", "-v", "0")
            export_bench.manage(env, "load_demo")
            facts = child(env, "--build", "--subjects", str(args.subjects), "--results", str(args.results))
            print(f"Built {facts['subjects']:,} subjects, {facts['draws']:,} draws, {facts['results']:,} results by "
                  f"COPY in {facts['build_seconds']} s (trial {facts['trial']}).")
        trial = "CART19-ALL"
        measured = child(env, "--measure", "--reps", str(args.reps), "--trial", trial)
        exported = None if args.no_export else export_bench.child(env, "--measure", "csv", "--trial", trial)
        report(measured, exported)
    finally:
        if not (args.keep or args.reuse):
            drop_database(base)


if __name__ == "__main__":
    main()
