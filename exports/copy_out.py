"""The rows of a ``COPY ... TO STDOUT``, read from libpq directly.

psycopg's ``Copy.read`` gives one row a call, each through a generator driven by the connection's ``wait`` (about
half a microsecond of Python per row, the whole cost of reading a million short CSV lines). ``rows`` asks libpq for
the rows itself, without waiting while one is in its buffer, and waits for the socket (releasing the GIL) only when
none is; at the end it reads the statement's result as psycopg does, so an error (a cancelled query, a failure in
the middle of the COPY) is raised as psycopg raises it.
"""

from __future__ import annotations

import select
from collections.abc import Iterator
from typing import Any

from psycopg import errors, pq
from psycopg.generators import fetch_many


def rows(copy: Any) -> Iterator[memoryview]:
    """Each row of ``copy`` (a psycopg ``Copy`` of a COPY TO, just opened) as ``copy.read()`` gives it, until the
    end. The copy is then over: its block ends as after reading every row with ``copy.read()``."""
    connection = copy.connection
    pgconn = connection.pgconn
    get, consume = pgconn.get_copy_data, pgconn.consume_input
    readable = select.poll()  # poll, not select: a socket's descriptor may be above select's limit (1,024)
    readable.register(pgconn.socket, select.POLLIN)
    while True:
        size, data = get(1)  # without blocking: 0 when libpq holds no complete row
        if size > 0:
            yield data
        elif size == 0:
            readable.poll()
            consume()
        else:  # -1: the copy is done; its result follows
            break
    result, *others = connection.wait(fetch_many(pgconn))
    if others:
        raise errors.ProgrammingError("A COPY's rows were followed by more than its result.")
    if result.status != pq.ExecStatus.COMMAND_OK:
        raise errors.error_from_result(result, encoding=connection.info.encoding)
