"""Ingestion benchmark: the whole HTTP stack against PostgreSQL COPY of the same rows, in one run.

    .venv/bin/python bench/ingest.py [--rows 100000] [--batch 1000] [--clients 2] [--reps 3] [--singles 500]
    .venv/bin/python bench/ingest.py --breakdown [--rows 50000] [--reps 3]

Starts the product under gunicorn (2 workers) on loopback against a dedicated database
(``cart_bench`` on the embedded server, or $BENCH_DATABASE_URL), loads the demo trial and issues a
service-account token. Each repetition posts ``--rows`` results in batches of ``--batch`` from
``--clients`` concurrent clients, then COPYs the same number of rows from one connection twice: into
the product's results table (same draws, same columns, its indexes, foreign keys and triggers) and
into a bare table of the same columns with only a primary key (what the database can write at best).
The three alternate (A B C A B C ...) after a discarded warm-up round, and medians are reported, with
the API's rate as a ratio of each baseline. Finally it times single-result posts (p50/p95).
The client, gunicorn and PostgreSQL share this machine's cores: read ratios, not absolute figures.

``--breakdown`` measures instead what each piece of the results table costs a COPY: the same rows into
tables of the results' columns with a primary key plus one piece each (an index, a foreign key, the
statement-level integrity trigger of assays.0007), all of the indexes, and the results table itself,
alternating, medians; each as rows/s, a ratio of the bare table and microseconds a row over it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TypedDict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ANALYTES = [("CRP", "mg/L", 1.0), ("IL6", "pg/mL", 1.0), ("FERRITIN", "ng/mL", 1.0), ("ANC", "10*9/L", 1.0),
            ("PLT", "10*9/L", 1.0), ("ALT", "U/L", 1.0), ("CAR_QPCR", "{copies}/ug", 1.0), ("HGB", "g/dL", 10.0)]


def database_url() -> str:
    if os.environ.get("BENCH_DATABASE_URL"):
        return os.environ["BENCH_DATABASE_URL"]
    from config.embedded_db import embedded_database_url

    base = embedded_database_url(ROOT)
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'cart_bench'").fetchone():
            conn.execute("CREATE DATABASE cart_bench")
    return base.replace("/postgres?", "/cart_bench?")


class Facts(TypedDict):
    """What prepare() prints as JSON: the token, the site's consented subjects as [code, pk] pairs, ids."""

    token: str
    subjects: list[tuple[str, int]]
    site: int
    user: int


def prepare(env: dict[str, str]) -> Facts:
    """Migrate, load the demo trial, issue a token for site BJ01; returns the token and subject facts."""
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True)
    subprocess.run([sys.executable, "manage.py", "load_demo"], cwd=ROOT, env=env, check=True, capture_output=True)
    script = (
        "import json\n"
        "from django.contrib.auth import get_user_model\n"
        "from trials.models import Trial, Site\n"
        "from trials.services import issue_service_account\n"
        "from patients.models import Subject\n"
        "t = Trial.objects.get(code='CART19-ALL'); s = Site.objects.get(code='BJ01')\n"
        "dm = get_user_model().objects.get(username='dm')\n"
        "import secrets\n"
        "acc, token = issue_service_account(trial=t, sites=[s], name='bench ' + secrets.token_hex(3), by=dm)\n"
        "subs = [(x.code, x.pk) for x in Subject.objects.filter(site=s, consents__isnull=False,"
        " consents__withdrawn_on__isnull=True).distinct()]\n"
        "print(json.dumps({'token': token, 'subjects': subs, 'site': s.pk, 'user': acc.user_id}))\n"
    )
    out = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


HISTORY_DRAWS = 20_000  # a running trial's earlier draws (500 subjects with 40 draws each)


def seed_history(url: str, facts: Facts) -> int:
    """Give the site the draws of a trial with history (``HISTORY_DRAWS``, once per database) and analyse the
    draws table, as autovacuum does on a running system: the API then plans as it does in production (a batch's
    read is prepared once the draws table's estimate is large, ``assays.services.PREPARED_BATCH_MIN_DRAWS``),
    not as in a new database's first minutes. Returns the table's row estimate."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        have = conn.execute("SELECT count(*) FROM assays_labdraw WHERE accession_number LIKE 'HIST-%%'").fetchone()
        if have and have[0] < HISTORY_DRAWS:
            subjects = [pk for _code, pk in facts["subjects"]]
            conn.execute(
                "INSERT INTO assays_labdraw (created_at, updated_at, subject_id, site_id, accession_number, specimen, "
                "collected_at, recorded_by_id) SELECT now(), now(), (%s::bigint[])[1 + g %% %s], %s, 'HIST-' || g, "
                "'pb', now() - interval '30 days' - g * interval '1 minute', %s "
                "FROM generate_series(%s::int, %s::int) g",
                [subjects, len(subjects), facts["site"], facts["user"], have[0] + 1, HISTORY_DRAWS])
        conn.execute("ANALYZE assays_labdraw")
        found = conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'assays_labdraw'::regclass").fetchone()
        return int(found[0]) if found else 0


WHEN = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).replace(microsecond=0)
RUN = f"{int(time.time()):x}"  # draws are kept between runs; each run collects its own


def make_rows(n: int, tag: str, subjects: list[tuple[str, int]]) -> list[dict[str, str]]:
    when = WHEN
    rows = []
    rng = random.Random(tag)  # each round its own values: no cache of a value's grade outlives the warm-up
    for i in range(n):
        code, _pk = subjects[i % len(subjects)]
        analyte, unit, _f = ANALYTES[i % len(ANALYTES)]
        draw = i // 40  # 40 results per draw, as a lab panel
        rows.append({"source_ref": f"{tag}-{i}", "subject": code, "accession_number": f"B{RUN}-{code}-{draw % 500}",
                     "specimen": "pb", "collected_at": (when - dt.timedelta(minutes=draw % 500)).isoformat(),
                     "analyte": analyte, "value": f"{rng.uniform(0.5, 300):.2f}", "unit": unit})
    return rows


def post(port: int, token: str, body: bytes) -> tuple[int, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    start = time.perf_counter()
    conn.request("POST", "/api/v1/results/", body=body,
                 headers={"Authorization": f"Token {token}", "Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, time.perf_counter() - start


def api_round(port: int, token: str, rows: list[dict[str, str]], batch: int, clients: int) -> float:
    bodies = [json.dumps({"results": rows[i:i + batch]}).encode() for i in range(0, len(rows), batch)]
    failures: list[int] = []

    def worker(share: list[bytes]) -> None:
        for body in share:
            code, _elapsed = post(port, token, body)
            if code not in (200, 201):
                failures.append(code)
                return

    threads = [threading.Thread(target=worker, args=(bodies[k::clients],)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise SystemExit(f"API refused {len(failures)} batches (first status {failures[0]}).")
    return len(rows) / elapsed


BARE = "bench_bare_result"


def create_bare(url: str) -> None:
    """The bare baseline: the results table's columns (types, NOT NULL, defaults) and a primary key only."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {BARE}")
        conn.execute(f"CREATE TABLE {BARE} (LIKE assays_result INCLUDING DEFAULTS INCLUDING IDENTITY)")
        conn.execute(f"ALTER TABLE {BARE} ADD PRIMARY KEY (id)")


def copy_round(url: str, rows: list[dict[str, str]], facts: Facts, table: str = "assays_result") -> float:
    """COPY the same rows into ``table``, with draw ids resolved beforehand (as a bulk loader would)."""
    import psycopg

    subjects = dict(facts["subjects"])
    with psycopg.connect(url) as conn:
        draws: dict[str, int] = dict(conn.execute("SELECT accession_number, id FROM assays_labdraw WHERE site_id = %s",
                                  [facts["site"]]).fetchall())
        analytes: dict[str, int] = dict(conn.execute("SELECT code, id FROM assays_analyte").fetchall())
        now = dt.datetime.now(dt.UTC)
        records = [(draws[r["accession_number"]], subjects[r["subject"]], facts["site"], analytes[r["analyte"]],
                    r["source_ref"], r["value"], r["unit"], float(r["value"]), "", "N", None, "final", False, "",
                    facts["user"], now) for r in rows]
        cols = ("draw_id, subject_id, site_id, analyte_id, source_ref, value_text, unit_text, value, censored, flag, "
                "ctcae_grade, status, superseded, correction_reason, recorded_by_id, recorded_at")
        start = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
            for record in records:
                copy.write_row(record)
        conn.commit()
        return len(rows) / (time.perf_counter() - start)


STATEMENT_CHECK = ("CREATE TRIGGER check_references AFTER INSERT ON {t} REFERENCING NEW TABLE AS new_rows "
                   "FOR EACH STATEMENT EXECUTE FUNCTION assays_result_check_references()")
# Each variant: the bare table (the results' columns, a primary key) plus these statements ({t}: its name).
PIECES: dict[str, list[str]] = {
    "primary key only (bare)": [],
    "+ index draw_id": ["CREATE INDEX ON {t} (draw_id)"],
    "+ index subject_id": ["CREATE INDEX ON {t} (subject_id)"],
    "+ index analyte_id": ["CREATE INDEX ON {t} (analyte_id)"],
    "+ unique (site_id, source_ref) where current": [
        "CREATE UNIQUE INDEX ON {t} (site_id, source_ref) WHERE NOT superseded"],
    "+ the four indexes": ["CREATE INDEX ON {t} (draw_id)", "CREATE INDEX ON {t} (subject_id)",
                           "CREATE INDEX ON {t} (analyte_id)",
                           "CREATE UNIQUE INDEX ON {t} (site_id, source_ref) WHERE NOT superseded"],
    "+ FK (draw, subject, site) -> draw": [
        "ALTER TABLE {t} ADD FOREIGN KEY (draw_id, subject_id, site_id) REFERENCES assays_labdraw "
        "(id, subject_id, site_id) DEFERRABLE INITIALLY DEFERRED"],
    "+ FK analyte": ["ALTER TABLE {t} ADD FOREIGN KEY (analyte_id) REFERENCES assays_analyte (id) "
                     "DEFERRABLE INITIALLY DEFERRED"],
    "+ FK recorded_by": ["ALTER TABLE {t} ADD FOREIGN KEY (recorded_by_id) REFERENCES auth_user (id) "
                         "DEFERRABLE INITIALLY DEFERRED"],
    "+ the three FKs": [
        "ALTER TABLE {t} ADD FOREIGN KEY (draw_id, subject_id, site_id) REFERENCES assays_labdraw "
        "(id, subject_id, site_id) DEFERRABLE INITIALLY DEFERRED",
        "ALTER TABLE {t} ADD FOREIGN KEY (analyte_id) REFERENCES assays_analyte (id) DEFERRABLE INITIALLY DEFERRED",
        "ALTER TABLE {t} ADD FOREIGN KEY (recorded_by_id) REFERENCES auth_user (id) DEFERRABLE INITIALLY DEFERRED"],
    "+ statement integrity check (three keys)": [STATEMENT_CHECK],
    "+ index recorded_by_id": ["CREATE INDEX ON {t} (recorded_by_id)"],
}
PIECES["+ the four indexes and the three FKs (before 0007)"] = (PIECES["+ the four indexes"]
                                                               + PIECES["+ the three FKs"])
PIECES["+ the four indexes and the statement check"] = PIECES["+ the four indexes"] + [STATEMENT_CHECK]


def breakdown(url: str, facts: Facts, subjects: list[tuple[str, int]], rows: int, reps: int) -> None:
    """COPY the same rows into the bare table plus each piece, and into the results table, alternating."""
    import psycopg

    tables: dict[str, str] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        has_check = conn.execute("SELECT 1 FROM pg_proc WHERE proname = 'assays_result_check_references'").fetchone()
        for n, (label, statements) in enumerate(PIECES.items()):
            if STATEMENT_CHECK in statements and not has_check:
                continue
            table = f"bench_piece_{n}"
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"CREATE TABLE {table} (LIKE assays_result INCLUDING DEFAULTS INCLUDING IDENTITY)")
            conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
            for statement in statements:
                conn.execute(statement.format(t=table))
            tables[label] = table
    tables["the results table (as migrated)"] = "assays_result"
    rates: dict[str, list[float]] = {label: [] for label in tables}
    for rep in range(reps + 1):  # the first round warms up and is discarded
        for label, table in tables.items():
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"TRUNCATE {table}" + (", assays_resultevent" if table == "assays_result" else ""))
            rate = copy_round(url, make_rows(rows, f"piece{rep}", subjects), facts, table)
            if rep:
                rates[label].append(rate)
    bare = statistics.median(rates["primary key only (bare)"])
    print(f"COPY of {rows:,} rows, medians of {reps} alternating rounds:")
    for label, values in rates.items():
        rate = statistics.median(values)
        print(f"  {label:<52} {rate:>9,.0f} rows/s  {rate / bare:6.1%} of bare  "
              f"{(1 / rate - 1 / bare) * 1e6:+6.2f} us/row")
    with psycopg.connect(url, autocommit=True) as conn:
        for table in tables.values():
            if table != "assays_result":
                conn.execute(f"DROP TABLE {table}")


def reset(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE assays_result, assays_resultevent, {BARE}")


def start_server(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen([str(ROOT / ".venv/bin/gunicorn"), "config.wsgi", "--workers", "2", "--bind",
                               f"127.0.0.1:{port}", "--log-level", "error"], cwd=ROOT, env=env)
    for _ in range(100):
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/api/schema/")
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("gunicorn did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--singles", type=int, default=500)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--breakdown", action="store_true", help="what each index and key costs a COPY")
    args = parser.parse_args()

    url = database_url()
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "bench-" + "x" * 50,
           "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost", "DJANGO_SECURE_SSL_REDIRECT": "0",
           "DJANGO_LOG_LEVEL": "ERROR"}
    facts = prepare(env)
    estimate = seed_history(url, facts)
    create_bare(url)
    token, subjects = str(facts["token"]), facts["subjects"]
    server = start_server(env, args.port)
    try:
        print(f"{args.rows} rows per round, batches of {args.batch}, {args.clients} clients, gunicorn 2 workers; "
              f"the draws table holds about {estimate:,} draws")
        api_round(args.port, token, make_rows(args.rows, "warm-api", subjects), args.batch, args.clients)
        if args.breakdown:  # the warm-up round wrote the draws the COPYs reference
            breakdown(url, facts, subjects, args.rows, args.reps)
            return
        copy_round(url, make_rows(args.rows, "warm-copy", subjects), facts)
        copy_round(url, make_rows(args.rows, "warm-bare", subjects), facts, BARE)
        api_rates, copy_rates, bare_rates = [], [], []
        for rep in range(args.reps):
            reset(url)
            api_rates.append(api_round(args.port, token, make_rows(args.rows, f"api{rep}", subjects), args.batch,
                                       args.clients))
            reset(url)
            copy_rates.append(copy_round(url, make_rows(args.rows, f"copy{rep}", subjects), facts))
            reset(url)
            bare_rates.append(copy_round(url, make_rows(args.rows, f"bare{rep}", subjects), facts, BARE))
            print(f"  round {rep + 1}: API {api_rates[-1]:,.0f} rows/s, COPY into the results table "
                  f"{copy_rates[-1]:,.0f} rows/s, COPY into a bare table {bare_rates[-1]:,.0f} rows/s")
        api_rate, copy_rate = statistics.median(api_rates), statistics.median(copy_rates)
        bare_rate = statistics.median(bare_rates)
        print(f"API ingestion (median): {api_rate:,.0f} rows/s")
        print(f"COPY into the results table (median): {copy_rate:,.0f} rows/s")
        print(f"COPY into a bare table, primary key only (median): {bare_rate:,.0f} rows/s")
        print(f"ratio API/COPY into the results table: {api_rate / copy_rate:.1%}")
        print(f"ratio API/bare COPY: {api_rate / bare_rate:.1%}  (target >= 25%)")
        latencies = []
        for row in make_rows(args.singles, "single", subjects):
            code, elapsed = post(args.port, token, json.dumps(row).encode())
            if code not in (200, 201):
                raise SystemExit(f"single post refused: {code}")
            latencies.append(elapsed * 1000)
        latencies.sort()
        p50, p95 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.95)]
        print(f"single-result post latency: p50 {p50:.1f} ms, p95 {p95:.1f} ms  (target p95 < 10 ms)")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
