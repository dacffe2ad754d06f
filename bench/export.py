"""Export benchmark: every registered format against PostgreSQL ``COPY (SELECT ...) TO STDOUT`` of the
results as CSV, in one run, on a throwaway database.

    .venv/bin/python bench/export.py [--subjects 500] [--results 1000000] [--reps 3] [--format csv ...]
                                     [--with-probe] [--tracemalloc] [--keep | --reuse]

Builds a trial in a throwaway database (``cart_bench_export`` on the embedded server, or
$BENCH_DATABASE_URL): the demo trial (``load_demo``), then ``--subjects`` subjects cloned by COPY from the
demo's treated subject, one lab draw per 40 results and ``--results`` results spread over them (COPY,
with the audit triggers on). Each export runs in a subprocess of its own (so that its peak memory is its
own) exactly as a worker runs it (``exports.services.run_export_job``), alternating with the COPY
baseline (A B A B ...); medians are reported: seconds, result rows/s, ratio to COPY, peak RSS of the
process (``ru_maxrss``) and the number of queries. The timed rounds run without tracemalloc (it slows
Python's per-row work severalfold); ``--tracemalloc`` adds one untimed round per format under it for the
peak Python allocations.
``--with-probe`` adds a minimal results-CSV format (ORM iterator + csv) to measure the packaging itself.
The database is dropped at the end unless ``--keep`` (``--reuse`` measures a kept one again, without building).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB_NAME = "cart_bench_export"
RESULTS_PER_DRAW = 40
FILES_SHOWN = 5  # the slowest files of each format, timed one by one
ANALYTES = ("CRP", "IL6", "FERRITIN", "ANC", "PLT", "ALT", "CAR_QPCR", "HGB")


def admin_url() -> str:
    if os.environ.get("BENCH_DATABASE_URL"):
        return os.environ["BENCH_DATABASE_URL"]
    from config.embedded_db import embedded_database_url

    return embedded_database_url(ROOT)


def with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def recreate_database(url: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    return with_db(url, DB_NAME)


def drop_database(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


def manage(env: dict[str, str], *args: str) -> str:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True).stdout


# --- building the trial (runs inside Django, in a subprocess: ``--build``) ----------------------------


def _copy(cursor: Any, table: str, columns: list[str], rows: Any) -> None:
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _template(cursor: Any, table: str, where: str, params: list[Any]) -> dict[str, Any]:
    cursor.execute(f"SELECT * FROM {table} WHERE {where} LIMIT 1", params)
    names = [d.name for d in cursor.description]
    return dict(zip(names, cursor.fetchone(), strict=True))


def build(subjects: int, results: int) -> dict[str, Any]:
    """Clone the demo's treated subject, then COPY draws and results; returns the trial's code and counts."""
    import django

    django.setup()
    import datetime as dt

    from django.db import connection

    from assays.models import Analyte, LabDraw, Result
    from patients.models import Subject

    template = Subject.objects.select_related("trial", "site").get(code="BJ01-0001")
    analytes = list(Analyte.objects.filter(code__in=ANALYTES).values_list("pk", "code"))
    start = time.perf_counter()
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor  # psycopg's own, for COPY
        row = _template(cursor, Subject._meta.db_table, "id = %s", [template.pk])
        columns = [c for c in row if c != "id"]

        def subject_row(i: int) -> list[Any]:
            values = {**row, "code": f"BX-{i:05d}", "screening_number": ""}
            return [values[c] for c in columns]  # json columns come back as text (Django's loader): COPY takes it

        _copy(cursor, Subject._meta.db_table, columns, (subject_row(i) for i in range(subjects)))
        ids = list(Subject.objects.filter(code__startswith="BX-").order_by("code").values_list("pk", flat=True))
        draws = max(1, results // RESULTS_PER_DRAW)
        when = dt.datetime(2026, 6, 1, 8, tzinfo=dt.UTC)
        now = dt.datetime.now(dt.UTC)
        user_id = template.created_by_id if hasattr(template, "created_by_id") else None
        user_id = user_id or _any_user(cursor)
        _copy(cursor, LabDraw._meta.db_table,
              ["created_at", "updated_at", "subject_id", "site_id", "accession_number", "specimen", "collected_at",
               "visit_id", "recorded_by_id"],
              ((now, now, ids[d % len(ids)], template.site_id, f"BX-{d:07d}", "pb",
                when + dt.timedelta(hours=d // len(ids)), None, user_id) for d in range(draws)))
        cursor.execute(f"SELECT id, subject_id FROM {LabDraw._meta.db_table} WHERE accession_number LIKE 'BX-%%' "
                       "ORDER BY accession_number")
        draw_rows = cursor.fetchall()
        _copy(cursor, Result._meta.db_table,
              ["draw_id", "subject_id", "site_id", "analyte_id", "source_ref", "value_text", "unit_text", "value",
               "censored", "flag", "ctcae_grade", "status", "superseded", "correction_reason", "recorded_by_id",
               "recorded_at"],
              ((draw_rows[r // RESULTS_PER_DRAW % len(draw_rows)][0], draw_rows[r // RESULTS_PER_DRAW
                                                                                % len(draw_rows)][1],
                template.site_id, analytes[r % len(analytes)][0], f"BX-{r}", f"{(r % 997) / 10:.1f}", "",
                (r % 997) / 10, "", "N", None, "final", False, "", user_id, now) for r in range(results)))
    connection.commit() if not connection.get_autocommit() else None
    return {"trial": template.trial.code, "subjects": subjects, "draws": len(draw_rows), "results": results,
            "build_seconds": round(time.perf_counter() - start, 1)}


def _any_user(cursor: Any) -> int:
    cursor.execute("SELECT id FROM auth_user WHERE username = 'dm'")
    return cursor.fetchone()[0]


# --- one measurement (a subprocess: ``--measure``) -------------------------------------------------------


def measure_copy() -> dict[str, Any]:
    import django

    django.setup()
    from django.db import connection

    from assays.models import Result
    from exports import copy_out

    start, size = time.perf_counter(), 0
    with connection.cursor() as django_cursor:
        sql = (f"COPY (SELECT r.id, s.code, a.code, r.value_text, r.unit_text, r.value, r.flag, d.collected_at "
               f"FROM {Result._meta.db_table} r JOIN patients_subject s ON s.id = r.subject_id "
               f"JOIN assays_analyte a ON a.id = r.analyte_id JOIN assays_labdraw d ON d.id = r.draw_id "
               f"ORDER BY s.code, d.collected_at, r.id) TO STDOUT WITH (FORMAT csv, HEADER)")
        with django_cursor.cursor.copy(sql) as copy:
            for chunk in copy_out.rows(copy):  # read as the exports read their COPYs
                size += len(chunk)
    return {"seconds": time.perf_counter() - start, "bytes": size, "queries": 1, **_memory()}


def measure_format(code: str, trial_code: str, with_probe: bool, traced: bool) -> dict[str, Any]:
    import tracemalloc

    import django

    django.setup()
    if traced:
        tracemalloc.start()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from exports.services import create_export_job, run_export_job
    from trials.models import Trial

    if with_probe:
        register_probe()
    user = get_user_model().objects.get(username="dm")
    job = create_export_job(by=user, trial=Trial.objects.get(code=trial_code), format_code=code, enqueue=False)
    start = time.perf_counter()
    marks: list[float] = []  # when the files were listed, then when each was written
    with CaptureQueriesContext(connection) as queries:
        job = run_export_job(job.pk, on_progress=lambda _done, _total: marks.append(time.perf_counter()))
    seconds = time.perf_counter() - start
    if job.state != "done":
        raise SystemExit(f"{code}: {job.error}")
    names = [f["name"] for f in job.manifest["files"]]
    files = {name: end - begin for name, begin, end in zip(names, marks, marks[1:], strict=False)}
    memory = _memory()  # before the package is read again below
    return {"seconds": seconds, "bytes": job.size, "queries": len(queries), "files": files, **memory,
            **package_costs(job.file_name)}


def package_costs(name: str) -> dict[str, float]:
    """Seconds the package's data files cost in deflate (at the package's level) and in SHA-256, each timed
    alone over the same bytes (read back from the package, untimed), and the whole-package digest."""
    import hashlib
    import zipfile
    import zlib

    from exports.package import COMPRESS_LEVEL, file_sha256
    from exports.storage import export_storage

    path = Path(export_storage().path(name))
    deflate = sha = 0.0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            compressor, digest = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, -15), hashlib.sha256()
            with archive.open(info) as member:
                while chunk := member.read(1 << 20):
                    start = time.perf_counter()
                    compressor.compress(chunk)
                    deflate += time.perf_counter() - start
                    start = time.perf_counter()
                    digest.update(chunk)
                    sha += time.perf_counter() - start
            start = time.perf_counter()
            compressor.flush()
            deflate += time.perf_counter() - start
    start = time.perf_counter()
    file_sha256(path)
    return {"deflate_seconds": deflate, "sha256_seconds": sha, "package_sha256_seconds": time.perf_counter() - start}


def _memory() -> dict[str, float]:
    import resource
    import tracemalloc

    peak_py = tracemalloc.get_traced_memory()[1] if tracemalloc.is_tracing() else 0
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_python_mb": peak_py / 2**20}


def register_probe() -> None:
    """A minimal results CSV through the ORM, to measure the packaging and the job machinery."""
    import csv

    from assays.models import Result
    from exports.formats import ExportFile, register

    class ResultsProbe:
        code, label = "probe", "Results CSV probe (bench)"

        def files(self, scope: Any) -> list[ExportFile]:
            def chunks() -> Any:
                buffer = io.StringIO()
                writer = csv.writer(buffer)
                rows = (Result.objects.filter(subject__in=scope.subjects()).order_by("subject__code", "pk")
                        .values_list("subject__code", "analyte__code", "value_text", "unit_text", "value", "flag")
                        .iterator(chunk_size=5000))
                for n, row in enumerate(rows, start=1):
                    writer.writerow(row)
                    if n % 5000 == 0:
                        yield buffer.getvalue().encode()
                        buffer.seek(0)
                        buffer.truncate()
                yield buffer.getvalue().encode()

            return [ExportFile("probe/results.csv", chunks, "text/csv")]

    register(ResultsProbe())


# --- the driver ---------------------------------------------------------------------------------------


def child(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def registered_formats(env: dict[str, str]) -> list[str]:
    script = "from exports.formats import REGISTRY; print('FORMATS', *sorted(REGISTRY))"
    lines = [line for line in manage(env, "shell", "-c", script).splitlines() if line.startswith("FORMATS")]
    return lines[-1].split()[1:]


def report(name: str, runs: list[dict[str, Any]], results: int, baseline: float | None,
           traced: dict[str, Any] | None = None) -> None:
    seconds = statistics.median(r["seconds"] for r in runs)
    rate = results / seconds
    ratio = f"{100 * baseline / seconds:6.1f}%" if baseline else "   100%"
    python = (f"peak Python {traced['peak_python_mb']:6.1f} MB (traced round: {traced['seconds']:.2f} s)"
              if traced else "peak Python not traced")
    print(f"{name:<12} {seconds:8.2f} s {rate:12,.0f} rows/s {ratio} of COPY  "
          f"peak RSS {max(r['peak_rss_mb'] for r in runs):7.1f} MB  {python}  "
          f"queries {max(r['queries'] for r in runs):4d}  {runs[-1]['bytes']:,} bytes")
    if "deflate_seconds" in runs[-1]:
        last = runs[-1]
        print(f"  of which (timed alone) deflate {last['deflate_seconds']:.2f} s, SHA-256 of the files "
              f"{last['sha256_seconds']:.2f} s, SHA-256 of the package {last['package_sha256_seconds']:.2f} s")
    files: dict[str, list[float]] = {}
    for measured in runs:
        for file, file_seconds in measured.get("files", {}).items():
            files.setdefault(file, []).append(file_seconds)
    slowest = sorted(((statistics.median(times), file) for file, times in files.items()), reverse=True)
    for file_seconds, file in slowest[:FILES_SHOWN]:
        ratio = f"{100 * baseline / file_seconds:6.1f}% of COPY" if baseline else ""
        print(f"  {file:<30} {file_seconds:8.2f} s {results / file_seconds:12,.0f} rows/s {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=500)
    parser.add_argument("--results", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--format", action="append", dest="formats", help="Only these formats (repeat)")
    parser.add_argument("--with-probe", action="store_true", help="Also a minimal results-CSV format")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="Also one untimed round per format under tracemalloc (peak Python allocations)")
    parser.add_argument("--keep", action="store_true", help="Keep the throwaway database")
    parser.add_argument("--reuse", action="store_true", help="Measure a database kept by --keep again (no build)")
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if args.build:
        print(json.dumps(build(args.subjects, args.results)))
        return
    if args.measure:
        result = measure_copy() if args.measure == "COPY" else measure_format(args.measure, args.trial,
                                                                               args.with_probe, args.traced)
        print(json.dumps(result))
        return
    run(args)


FACTS = ROOT / "var" / "bench-export.json"  # what the kept database holds, for --reuse


def prepare(env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    if args.reuse:
        facts: dict[str, Any] = json.loads(FACTS.read_text())
        args.results = facts["results"]
        return facts
    manage(env, "migrate", "--no-input", "-v", "0")
    manage(env, "load_demo")
    facts = child(env, "--build", "--subjects", str(args.subjects), "--results", str(args.results))
    FACTS.write_text(json.dumps(facts))
    return facts


def run(args: argparse.Namespace) -> None:
    base = admin_url()
    url = with_db(base, DB_NAME) if args.reuse else recreate_database(base)
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_DEBUG": "0",
           "DJANGO_SECRET_KEY": "bench-only-" + "x" * 50, "DJANGO_EXPORTS_DIR": str(ROOT / "var" / "bench-exports")}
    try:
        facts = prepare(env, args)
        print(f"Built {facts['subjects']} subjects, {facts['draws']:,} draws, {facts['results']:,} results by COPY "
              f"in {facts['build_seconds']} s (trial {facts['trial']}).")
        formats = args.formats or registered_formats(env) + (["probe"] if args.with_probe else [])
        probe = ["--with-probe"] if args.with_probe else []
        child(env, "--measure", "COPY")  # warm-up, discarded
        runs: dict[str, list[dict[str, Any]]] = {"COPY": [], **{f: [] for f in formats}}
        for _ in range(args.reps):  # A B A B ...
            for name in runs:
                runs[name].append(child(env, "--measure", name, "--trial", facts["trial"], *probe))
                print(f"  measured {name}: {runs[name][-1]['seconds']:.2f} s", flush=True)
        traced = {f: child(env, "--measure", f, "--trial", facts["trial"], "--traced", *probe)
                  for f in formats} if args.tracemalloc else {}
        baseline = statistics.median(r["seconds"] for r in runs["COPY"])
        print(f"{args.reps} rounds, medians; rows/s counts the {args.results:,} results whatever the format writes.")
        for name, measured in runs.items():
            report(name, measured, args.results, None if name == "COPY" else baseline, traced.get(name))
        if not formats:
            print("No export format is registered (exports.formats.FORMAT_MODULES); --with-probe measures the "
                  "packaging with a minimal one.")
    finally:
        if not (args.keep or args.reuse):
            drop_database(base)


if __name__ == "__main__":
    main()
