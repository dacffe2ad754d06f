"""Reads shared by the rules asked within one read-only view.

The subject page asks every ``check_*`` rule whether its action is open now (``patients.desk``); each rule
reads the subject's lock, consents and timeline on its own, as it must when it guards a write. Inside
``shared_reads()`` the owners of those reads (``locking.services.blocking_lock``,
``patients.selectors.consents_of``, ``patients.timeline.timeline_of``, and the subject's records of each kind:
``patients.selectors.records_of``, ``doses_of``) answer each question once and hand the same answer to every
later rule, and to the course list and visit calendar that show the same rows. Outside it, and so on every
write path, each call reads the database afresh.

Only code that writes nothing may open the scope: an answer is not refreshed when a record changes inside it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

_shared: ContextVar[dict[Hashable, Any] | None] = ContextVar("shared_reads", default=None)


@contextmanager
def shared_reads() -> Iterator[None]:
    """Within the block, each ``shared(key, read)`` runs its read once; a nested block joins the outer one."""
    if _shared.get() is not None:
        yield
        return
    token = _shared.set({})
    try:
        yield
    finally:
        _shared.reset(token)


def shared(key: Hashable, read: Callable[[], T]) -> T:
    """``read()``, or inside ``shared_reads()`` the answer it gave the first time for ``key``."""
    answers = _shared.get()
    if answers is None:
        return read()
    if key not in answers:
        answers[key] = read()
    answer: T = answers[key]
    return answer
