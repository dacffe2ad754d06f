"""Trial summary benchmark: ``GET .../summary/``'s work (load the records, compute every figure) against a plain
``SELECT count(*)`` over the same results, in one run, on a throwaway database. The summary's Kaplan-Meier
library (lifelines, with SciPy) is imported before the clock starts and its import time printed apart: a web
server or worker pays it once, not per summary.

    .venv/bin/python bench/summary.py [--subjects 500] [--results 1000000] [--reps 3] [--keep]

Builds the trial as bench/export.py does (the demo trial, ``--subjects`` clones of its treated subject and
``--results`` results over them by COPY), then gives every clone the template's infusion (COPY), so that each
is a treated subject of the summary. Each measurement runs in a subprocess of its own, alternating summary and
count (A B A B ...); medians are reported, with the summary's number of queries. The database is dropped at the
end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import export as builder  # noqa: E402  (bench/export.py, beside this script: its builder and helpers)

builder.DB_NAME = "cart_bench_summary"


def infuse_clones() -> dict[str, Any]:
    """Give every cloned subject (code BX-...) the template subject's first infusion, by COPY."""
    import django

    django.setup()
    from django.db import connection

    from patients.models import Infusion, Subject

    template = Subject.objects.get(code="BJ01-0001")
    clones = list(Subject.objects.filter(code__startswith="BX-").values_list("pk", flat=True))
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        row = builder._template(cursor, Infusion._meta.db_table, "subject_id = %s", [template.pk])
        columns = [c for c in row if c != "id"]
        builder._copy(cursor, Infusion._meta.db_table, columns,
                      ([{**row, "subject_id": pk}[c] for c in columns] for pk in clones))
    return {"infused": len(clones)}


def measure(kind: str, trial_code: str) -> dict[str, Any]:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from assays.models import Result
    from summaries.selectors import load_trial_records
    from summaries.summary import summarise
    from trials.models import Trial

    user = get_user_model().objects.get(username="dm")
    trial = Trial.objects.get(code=trial_code)
    start = time.perf_counter()
    if kind == "summary":  # once per server process, not per summary: timed apart
        import lifelines  # noqa: F401
    imported = time.perf_counter() - start
    with CaptureQueriesContext(connection) as queries:
        start = time.perf_counter()
        if kind == "count":
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT count(*) FROM {Result._meta.db_table}")
                n = cursor.fetchone()[0]
        else:
            n = summarise(load_trial_records(user=user, trial=trial), 1, now=timezone.now())["n_subjects"]
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "n": n, "queries": len(queries), "import_seconds": imported}


def run(args: argparse.Namespace) -> None:
    base = builder.admin_url()
    env = {**os.environ, "DATABASE_URL": builder.recreate_database(base), "DJANGO_DEBUG": "0",
           "DJANGO_SECRET_KEY": "bench-only-" + "x" * 50}
    try:
        builder.manage(env, "migrate", "--no-input", "-v", "0")
        builder.manage(env, "load_demo")
        facts = builder.child(env, "--build", "--subjects", str(args.subjects), "--results", str(args.results))
        infused = child(env, "--infuse")
        print(f"Built {facts['subjects']} subjects ({infused['infused']} infused), {facts['results']:,} results "
              f"in {facts['build_seconds']} s (trial {facts['trial']}).")
        child(env, "--measure", "summary", "--trial", facts["trial"])  # warm-up, discarded
        runs: dict[str, list[dict[str, Any]]] = {"count": [], "summary": []}
        for _ in range(args.reps):
            for kind in runs:
                runs[kind].append(child(env, "--measure", kind, "--trial", facts["trial"]))
        baseline = statistics.median(r["seconds"] for r in runs["count"])
        for kind, measured in runs.items():
            seconds = statistics.median(r["seconds"] for r in measured)
            print(f"{kind:<8} {seconds:8.3f} s  {seconds / baseline:7.1f} x count(*)  queries "
                  f"{max(r['queries'] for r in measured):3d}  n {measured[-1]['n']:,}")
        imports = statistics.median(r["import_seconds"] for r in runs["summary"])
        print(f"(lifelines and SciPy imported before the summary's clock starts, as a server process has them: "
              f"{imports:.3f} s, once per process)")
    finally:
        if not args.keep:
            builder.drop_database(base)


def child(env: dict[str, str], *args: str) -> dict[str, Any]:
    import subprocess

    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=500)
    parser.add_argument("--results", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="Keep the throwaway database")
    parser.add_argument("--infuse", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if args.infuse:
        print(json.dumps(infuse_clones()))
    elif args.measure:
        print(json.dumps(measure(args.measure, args.trial)))
    else:
        run(args)


if __name__ == "__main__":
    main()
