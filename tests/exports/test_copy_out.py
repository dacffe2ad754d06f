"""``exports.copy_out.rows`` reads a COPY's rows from libpq itself: the same rows as psycopg's ``Copy.read``, the
server's error raised as psycopg raises it, after the rows before it, and the connection left ready for the next
statement. A cancelled COPY raises QueryCanceled. The XPT's server-side reading ahead, stopped early, leaves the
connection as ready."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from django.db import connection, transaction

from exports import copy_out

pytestmark = pytest.mark.django_db

ROWS = ("COPY (SELECT i, 'text ' || i, CASE WHEN i %% 7 = 0 THEN 'quoted, \"text\"' END FROM generate_series(1, %s) i) "
        "TO STDOUT (FORMAT csv)")


def _read(query: str, params: list[object], *, raw: bool) -> list[bytes]:
    with connection.cursor() as cursor, cursor.cursor.copy(query, params) as copy:
        if raw:
            return [bytes(row) for row in copy_out.rows(copy)]
        out = []
        while row := copy.read():
            out.append(bytes(row))
        return out


@pytest.mark.parametrize("count", [0, 1, 30_000])
def test_rows_are_the_rows_psycopg_reads_one_by_one(count: int) -> None:
    rows = _read(ROWS, [count], raw=True)
    assert rows == _read(ROWS, [count], raw=False)
    assert len(rows) == count and (not count or rows[-1] == b"%d,text %d,\n" % (count, count))
    with connection.cursor() as cursor:  # the connection takes the next statement
        cursor.execute("SELECT 41 + 1")
        assert cursor.fetchone() == (42,)


def test_an_error_in_the_middle_of_the_copy_is_raised_after_the_rows_before_it() -> None:
    got: list[bytes] = []
    with pytest.raises(psycopg.errors.DivisionByZero), transaction.atomic():
        with connection.cursor() as cursor, cursor.cursor.copy(
                "COPY (SELECT 100 / (5000 - i) FROM generate_series(1, 10000) i) TO STDOUT") as copy:
            got.extend(bytes(row) for row in copy_out.rows(copy))
    assert len(got) < 5000 and got[:2] == [b"0\n", b"0\n"]  # streamed up to the failure (the server sends in batches)
    with connection.cursor() as cursor:  # the savepoint rolled back: the transaction goes on
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_a_copy_cancelled_while_its_rows_are_read_raises_query_canceled() -> None:
    """The server sends 5,000 rows (more than its output buffer, so they reach the client), then sleeps; the query is
    cancelled once the reader has rows in hand, i.e. while ``rows`` waits on the socket, not while psycopg opens
    the copy."""
    connection.ensure_connection()
    raw = connection.connection  # the test's connection (Django's is per thread)
    timer = threading.Timer(0.3, raw.cancel_safe)
    got: list[bytes] = []
    begun = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled), transaction.atomic():
        with connection.cursor() as cursor, cursor.cursor.copy(
                "COPY (SELECT i, repeat('x', 20), pg_sleep(CASE WHEN i = 5001 THEN 30 ELSE 0 END) "
                "FROM generate_series(1, 5002) i) TO STDOUT") as copy:
            for row in copy_out.rows(copy):
                if not got:
                    timer.start()
                got.append(bytes(row))
    timer.join()
    assert time.monotonic() - begun < 10  # cancelled, not read to its end after 30 s
    assert 0 < len(got) <= 5000 and got[0] == b"1\t" + b"x" * 20 + b"\t\n"
    with connection.cursor() as cursor:  # the savepoint rolled back: the transaction goes on
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_a_server_side_read_stopped_early_leaves_the_connection_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    """The XPT's rows are read ahead by a server-side cursor (``lb_sql._server_side_chunks``); a reader stopped
    after its first chunk (a failed export, or the other part's failure) ends its cursor and its queued fetches,
    and the connection takes the next statement."""
    from exports.sdtm import lb_sql

    monkeypatch.setattr(lb_sql, "XPT_CHUNK", 100)
    query = "SELECT int4send(i) FROM generate_series(1, 100000) i"
    with transaction.atomic():
        chunks = lb_sql._server_side_chunks(connection, query, {}, ahead=20)
        first = next(chunks)
        assert [int.from_bytes(row, "big") for row in first] == list(range(1, 101))
        chunks.close()
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_cursors")
            assert cursor.fetchone() == (0,)
            cursor.execute("SELECT 6 * 7")
            assert cursor.fetchone() == (42,)
    whole = list(lb_sql._server_side_chunks(connection, query, {}, ahead=20))
    assert len(whole) == 1000 and int.from_bytes(whole[-1][-1], "big") == 100000
