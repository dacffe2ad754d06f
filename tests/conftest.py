"""Shared fixtures: one trial with two active sites (A and B) and a user of every role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from tests.factories import PASSWORD, MembershipFactory, SiteFactory, TrialSiteFactory, UserFactory, build_trial
from trials.models import Membership, Site, Trial

R = Membership.Role


@dataclass
class World:
    trial: Trial
    site_a: Site
    site_b: Site
    coordinator: Any  # site A
    investigator: Any  # site A
    monitor: Any  # site A
    data_manager: Any  # trial-wide
    coordinator_b: Any  # site B
    investigator_b: Any  # site B


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    """PBKDF2's deliberate slowness is for production logins; tests create many users."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_content_types() -> None:
    """Transactional tests flush every table and recreate content types under new ids; the
    in-process cache would still hold the old ones (the admin log then fails its foreign key)."""
    from django.contrib.contenttypes.models import ContentType

    ContentType.objects.clear_cache()


@pytest.fixture
def world(db: None) -> World:
    trial = build_trial()
    site_a, site_b = SiteFactory(code="SA"), SiteFactory(code="SB")
    TrialSiteFactory(trial=trial, site=site_a)
    TrialSiteFactory(trial=trial, site=site_b)

    def member(role: str, site: Site | None, name: str) -> Any:
        user = UserFactory(username=name)
        MembershipFactory(user=user, trial=trial, site=site, role=role)
        return user

    return World(
        trial=trial, site_a=site_a, site_b=site_b,
        coordinator=member(R.COORDINATOR, site_a, "coord_a"),
        investigator=member(R.INVESTIGATOR, site_a, "inv_a"),
        monitor=member(R.MONITOR, site_a, "monitor_a"),
        data_manager=member(R.DATA_MANAGER, None, "dm"),
        coordinator_b=member(R.COORDINATOR, site_b, "coord_b"),
        investigator_b=member(R.INVESTIGATOR, site_b, "inv_b"),
    )


def client_for(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.fixture
def login() -> Any:
    """``login(user)`` returns a test client logged in as that user."""
    return client_for


def seed_catalogue() -> None:
    """Seed the analyte catalogue and the CTCAE terms as their migrations did, if a flush emptied them."""
    from importlib import import_module

    from django.apps import apps

    from assays.models import Analyte
    from patients.models import CtcaeTerm

    if not Analyte.objects.exists():
        import_module("assays.migrations.0002_seed_catalogue").seed(apps, None)
        import_module("assays.migrations.0008_seed_antigen_blast_analytes").seed(apps, None)
    if not CtcaeTerm.objects.exists():  # the CTCAE v5.0 terms the same way
        import_module("patients.migrations.0006_ctcae_terms_sae_reports").seed_terms(apps, None)


@pytest.fixture(scope="module")
def restore_catalogue(django_db_blocker: Any) -> Any:
    """For modules of transactional tests: their flush empties every table, including the analyte
    catalogue that a migration seeded. Module scope tears down after the last test's flush, and seeds
    the catalogue again for the tests that follow (serialized_rollback cannot: it would rewrite the
    append-only history tables)."""
    yield
    from django.db import connection

    with django_db_blocker.unblock():
        seed_catalogue()
        connection.close()  # after a browser module this runs beside Playwright's event loop: leave nothing open
