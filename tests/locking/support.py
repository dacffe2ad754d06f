"""Helpers for the data-lock tests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from locking.models import Lock
from locking.services import lock_scope
from patients.services import measurements
from tests.factories import consented, days_ago

REASON = "Interim analysis cut-off"


def site_a_subject(world: Any) -> Any:
    return consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)


def site_b_subject(world: Any) -> Any:
    return consented(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b)


def lock(world: Any, level: str = "lock", reason: str = REASON, **scope: Any) -> Lock:
    """A lock taken by the trial's data manager: of the trial, or of ``site=`` or ``subject=``."""
    return lock_scope(trial=world.trial, level=level, reason=reason, by=world.data_manager, **scope)


def measure(subject: Any, by: Any) -> Any:
    """A subject-level clinical write through its service."""
    return measurements.record_body_measurement(subject=subject, measured_on=days_ago(10), height_cm=Decimal("170"),
                                                weight_kg=Decimal("70"), by=by)
