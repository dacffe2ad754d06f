"""The export's snapshot, read on a second connection beside the export's own.

An export reads everything inside one read-only REPEATABLE READ transaction (``exports.services``), whose
snapshot it exports (``pg_export_snapshot``) when the transaction is its own. A large file can then be read in two
parts by subject: the second on another connection that imports the same snapshot (``SET TRANSACTION SNAPSHOT``:
it sees exactly what the export's transaction sees, nothing committed since), in a thread, while the export's own
connection reads the first and the package writes it; the second part's bytes wait in a spool (memory up to
``SPOOL_MEMORY``, then a temporary file), and are written after the first (an XPT file's second part hands over
its rows spooled its own way instead: ``exports.sdtm.lb_sql``). PostgreSQL then builds the two parts on two cores.
Inside a caller's transaction (a test's), whose writes no other connection sees, there is no snapshot to share and
files are read in one part.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import IO, Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from psycopg import sql

# The largest files are sorted by PostgreSQL (a million results: some 200 MB of rows): in memory, not on disk.
EXPORT_WORK_MEM = "256MB"
SPOOL_MEMORY = 8 * 1024 * 1024
SPOOL_READ = 1024 * 1024
SPLIT_MIN_DRAWS = 2000  # a file of fewer lab draws is read in one part: a second connection costs more
T = TypeVar("T")


def begin_sql() -> list[str]:
    """The statements that make the export's transaction (and the snapshot's reader) what it is: the isolation
    first (before any query), then its settings. Every cursor of an export is read to its end, so the planner is
    told so (``cursor_tuple_fraction`` 1, as for a plain query): with its default, 0.1, a cursor over a table just
    bulk-loaded and not yet analysed was planned to give its first rows fast, and PP's query read the CAR
    transgene's results in 88 s instead of 0.8 (bench/export.py's first round after its build)."""
    return ["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            f"SELECT set_config('work_mem', '{EXPORT_WORK_MEM}', true), set_config('cursor_tuple_fraction', '1', true)"]


def halves(weights: Sequence[int]) -> int:
    """Where to cut items (subjects in the file's order, ``weights`` their rows) into two parts of about the same
    weight: the number of items in the first part, at least one and leaving at least one when there are two."""
    total, running = sum(weights), 0
    for i, weight in enumerate(weights):
        if 2 * running >= total:
            return max(1, i)
        running += weight
    return max(1, len(weights) - 1) if len(weights) > 1 else len(weights)


class Beside:
    """The bytes ``produce`` gives on a second connection (a Django connection of its own, in a transaction reading
    ``snapshot``), made in a thread and spooled. ``chunks()`` gives them once the thread is done (and raises what it
    raised); ``close()`` stops the thread (cancelling its query) if it still runs, and drops the spool."""

    def __init__(self, snapshot: str, produce: Callable[[BaseDatabaseWrapper], Iterator[bytes]]) -> None:
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115  (closed in close)
        self._error: BaseException | None = None
        self._raw: Any = None
        self._stopped = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(snapshot, produce), daemon=True,
                                        name="export-snapshot-reader")
        self._thread.start()

    def _run(self, snapshot: str, produce: Callable[[BaseDatabaseWrapper], Iterator[bytes]]) -> None:
        wrapper = connections.create_connection(DEFAULT_DB_ALIAS)
        try:
            wrapper.ensure_connection()
            wrapper.set_autocommit(False)  # one transaction, begun by the first statement, rolled back at the end
            self._raw = wrapper.connection
            self._ready.set()
            isolation, *settings = begin_sql()
            with wrapper.cursor() as cursor:
                cursor.execute(isolation)
                cursor.execute(f"SET TRANSACTION SNAPSHOT {sql.Literal(snapshot).as_string(wrapper.connection)}")
                for setting in settings:
                    cursor.execute(setting)
            produced = produce(wrapper)
            try:
                for chunk in produced:
                    if self._stopped:
                        break
                    self._spool.write(chunk)
            finally:  # a generator stopped early ends its query (and cursor) before the transaction ends
                close = getattr(produced, "close", None)
                if close is not None:
                    close()
            wrapper.rollback()
        except BaseException as err:  # handed to the caller by chunks()
            self._error = err
        finally:
            self._ready.set()
            self._raw = None
            wrapper.close()

    def result(self, future: Future[T]) -> T:
        """``future``'s result, which ``produce`` sets in the thread; the thread's error if it ended without."""
        while True:
            try:
                return future.result(timeout=0.05)
            except TimeoutError:
                if not self._thread.is_alive() and not future.done():
                    raise self._error or RuntimeError("The snapshot's reader ended without its result.") from None

    def chunks(self) -> Iterator[bytes]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        self._spool.seek(0)
        while chunk := self._spool.read(SPOOL_READ):
            yield chunk

    def close(self) -> None:
        if self._thread.is_alive():
            self._stopped = True
            self._ready.wait()
            raw = self._raw
            if raw is not None:
                raw.cancel_safe()
            self._thread.join()
        self._spool.close()


@contextmanager
def beside(snapshot: str, produce: Callable[[BaseDatabaseWrapper], Iterator[bytes]]) -> Iterator[Beside]:
    reader = Beside(snapshot, produce)
    try:
        yield reader
    finally:
        reader.close()
