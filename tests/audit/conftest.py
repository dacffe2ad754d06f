"""Audit-trail fixtures: changes made "through a request" carry the context the request middleware and
services record (user, url, method, request id), as they do in the admin and the API."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pghistory
import pytest

from audit.selectors import AuditFilters, AuditScope, audit_scope, iter_audit_entries
from patients.models import Subject
from patients.services import enrolment
from tests.factories import MembershipFactory, UserFactory, screened
from trials.models import Membership


@contextlib.contextmanager
def as_request(user: Any, *, url: str = "/admin/test/", method: str = "POST",
               request_id: str = "req-1") -> Iterator[None]:
    with pghistory.context(user=user.pk, url=url, method=method, request_id=request_id):
        yield


def screen(world: Any, *, site: Any = None, by: Any = None, **chars: Any) -> Subject:
    by = by or world.coordinator
    with as_request(by, url="/admin/patients/subject/add/", request_id=f"screen-{by.username}"):
        return screened(trial=world.trial, site=site or world.site_a, coordinator=by, **chars)


def amend(subject: Subject, by: Any, reason: str, **changes: Any) -> Subject:
    with as_request(by, url=f"/admin/patients/subject/{subject.pk}/change/", request_id="amend-1"):
        return enrolment.amend_subject(subject=subject, changes=changes, reason=reason, by=by)


def entries_for(user: Any, **filters: Any) -> list[Any]:
    scope = audit_scope(user)
    assert scope is not None
    return list(iter_audit_entries(scope=scope, filters=AuditFilters(**filters)))


def scope_of(user: Any) -> AuditScope:
    scope = audit_scope(user)
    assert scope is not None
    return scope


@pytest.fixture
def monitor_b(world: Any) -> Any:
    user = UserFactory(username="monitor_b")
    MembershipFactory(user=user, trial=world.trial, site=world.site_b, role=Membership.Role.MONITOR)
    return user


@pytest.fixture
def amended(world: Any) -> Subject:
    """A site-A subject whose marrow blasts and prior lines were corrected with a reason."""
    subject = screen(world, marrow_blasts_pct=Decimal("35.00"), prior_lines=2)
    return amend(subject, world.coordinator, "Source document says 42.5%, 3 lines",
                 marrow_blasts_pct=Decimal("42.50"), prior_lines=3)
