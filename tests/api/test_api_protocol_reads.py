"""Protocol reads: a site's system learns every code it sends with its writes from /api/v1/trials/,
scoped like everything else (only the caller's trials; among sites, only those of its memberships)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.api.support import api_client, token_client
from tests.factories import (
    CohortFactory,
    CriterionFactory,
    MembershipFactory,
    SiteFactory,
    TrialSiteFactory,
    UserFactory,
    build_trial,
)
from trials.models import DoseLevel, LymphodepletionRegimen, Product, RegimenAgent, RegistryIdentifier, Visit
from trials.services import issue_service_account

pytestmark = pytest.mark.django_db

TRIALS = "/api/v1/trials/"


def results(response):
    assert response.status_code == 200, response.json()
    return response.json()["results"]


@pytest.fixture
def other_trial(world):
    """A second trial at site A that none of the world's users is a member of."""
    trial = build_trial(code="OTHER-TRIAL")
    TrialSiteFactory(trial=trial, site=world.site_a)
    return trial


def test_lists_only_the_callers_trials(world, other_trial):
    RegistryIdentifier.objects.create(trial=world.trial, registry="ctgov", identifier="NCT04351022")
    body = results(api_client(world.coordinator).get(TRIALS))
    assert [t["code"] for t in body] == [world.trial.code]
    assert body[0]["registry_identifiers"] == [{"registry": "ctgov", "identifier": "NCT04351022"}]


def test_trial_detail_carries_the_settings_a_client_needs(world):
    body = api_client(world.coordinator).get(f"{TRIALS}{world.trial.code}/").json()
    assert body["code"] == world.trial.code
    assert (body["infusion_window_min_days"], body["infusion_window_max_days"]) == (2, 7)
    assert (body["reinfusion_allowed"], body["split_dose_max_days"]) == (world.trial.reinfusion_allowed, 7)
    assert "id" not in body


@pytest.mark.parametrize("part", ["", "sites/", "cohorts/", "products/", "dose-levels/", "lymphodepletion-regimens/",
                                  "visits/", "eligibility-criteria/"])
def test_another_trial_and_an_unknown_one_are_both_404(world, other_trial, part):
    client = api_client(world.coordinator)
    other = client.get(f"{TRIALS}{other_trial.code}/{part}")
    unknown = client.get(f"{TRIALS}NO-SUCH-TRIAL/{part}")
    assert other.status_code == unknown.status_code == 404
    assert other.json() == unknown.json()


def test_a_site_bound_coordinator_sees_only_their_own_site(world):
    body = results(api_client(world.coordinator).get(f"{TRIALS}{world.trial.code}/sites/"))
    assert [s["code"] for s in body] == ["SA"]
    assert set(body[0]) == {"code", "name", "country", "time_zone", "status", "activated_on"}


def test_a_service_account_sees_only_its_bound_sites(world):
    _account, token = issue_service_account(trial=world.trial, sites=[world.site_b], name="B system",
                                            by=world.data_manager)
    body = results(token_client(token).get(f"{TRIALS}{world.trial.code}/sites/"))
    assert [s["code"] for s in body] == ["SB"]


def test_a_trial_wide_data_manager_sees_every_site(world):
    body = results(api_client(world.data_manager).get(f"{TRIALS}{world.trial.code}/sites/"))
    assert [s["code"] for s in body] == ["SA", "SB"]


def test_design_lists_show_codes(world):
    client = api_client(world.coordinator)
    base = f"{TRIALS}{world.trial.code}/"
    assert [c["code"] for c in results(client.get(f"{base}cohorts/"))] == ["ADULT", "PED"]
    assert [p["code"] for p in results(client.get(f"{base}products/"))] == ["HCART19"]
    assert results(client.get(f"{base}dose-levels/")) == [
        {"code": "DL1", "cells_per_kg": "1000000", "tolerance_pct": "20.00"}]
    regimen, = results(client.get(f"{base}lymphodepletion-regimens/"))
    assert (regimen["code"], regimen["dose_tolerance_pct"]) == ("FC", "10.00")
    assert regimen["agents"] == [
        {"agent": "cyclophosphamide", "dose_mg_per_m2_per_day": "250.00", "days": [-5, -4, -3]},
        {"agent": "fludarabine", "dose_mg_per_m2_per_day": "30.00", "days": [-5, -4, -3]}]
    criteria = results(client.get(f"{base}eligibility-criteria/"))
    assert [(c["code"], c["kind"], c["number"]) for c in criteria] == [
        ("E1", "exclusion", 1), ("I1", "inclusion", 1), ("I2", "inclusion", 2)]


def test_visits_show_target_day_window_and_expected_assays(world):
    Visit.objects.create(trial=world.trial, code="D7", name="Day 7", target_day=7, window_before_days=1,
                         window_after_days=2, expected_assays=["CAR_QPCR", "CRP"])
    Visit.objects.create(trial=world.trial, code="D28", name="Day 28", target_day=28, primary_response=True)
    body = results(api_client(world.coordinator).get(f"{TRIALS}{world.trial.code}/visits/"))
    assert body == [{"code": "D7", "name": "Day 7", "target_day": 7, "window_before_days": 1,
                     "window_after_days": 2, "expected_assays": ["CAR_QPCR", "CRP"], "primary_response": False},
                    {"code": "D28", "name": "Day 28", "target_day": 28, "window_before_days": 0,
                     "window_after_days": 0, "expected_assays": [], "primary_response": True}]


def test_a_monitor_reads_the_design_too(world):
    assert [t["code"] for t in results(api_client(world.monitor).get(TRIALS))] == [world.trial.code]


# --- query counts: the same for 1 row as for 10 ------------------------------------------------------
# Each builder adds row number ``i`` of its list; the reader is a trial-wide data manager of the trial.


def _trial(world, reader, i):
    trial = build_trial(code=f"QT-{i}")
    MembershipFactory(user=reader, trial=trial, site=world.site_a, role="coordinator")
    RegistryIdentifier.objects.create(trial=trial, registry="isrctn", identifier=f"ISRCTN{i:08d}")


def _site(world, reader, i):
    TrialSiteFactory(trial=world.trial, site=SiteFactory(code=f"QS{i}"))


def _cohort(world, reader, i):
    CohortFactory(trial=world.trial, code=f"QC{i}", name=f"Cohort {i}")


def _product(world, reader, i):
    Product.objects.create(trial=world.trial, code=f"QP{i}", name=f"Product {i}", target_antigens=["CD19"],
                           scfv_origin="humanized", costimulatory_domain="4-1BB", vector="lentiviral",
                           allowed_sources=["autologous"])


def _dose_level(world, reader, i):
    DoseLevel.objects.create(trial=world.trial, code=f"QD{i}", cells_per_kg=Decimal(2_000_000 + i))


def _regimen(world, reader, i):
    regimen = LymphodepletionRegimen.objects.create(trial=world.trial, code=f"QR{i}", name=f"Regimen {i}")
    RegimenAgent.objects.create(regimen=regimen, agent="bendamustine", dose_mg_per_m2=90, days=[-4, -3])


def _visit(world, reader, i):
    Visit.objects.create(trial=world.trial, code=f"QV{i}", name=f"Visit {i}", target_day=10 + i)


def _criterion(world, reader, i):
    CriterionFactory(trial=world.trial, kind="inclusion", number=10 + i, text=f"Criterion {i}")


DESIGN_LISTS = [("", _trial), ("sites/", _site), ("cohorts/", _cohort), ("products/", _product),
                ("dose-levels/", _dose_level), ("lymphodepletion-regimens/", _regimen), ("visits/", _visit),
                ("eligibility-criteria/", _criterion)]


def _count(client, url):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, {"page_size": 500})
    assert response.status_code == 200, response.json()
    return len(queries), response.json()["count"]


@pytest.mark.parametrize(("part", "make"), DESIGN_LISTS, ids=[p.rstrip("/") or "trials" for p, _m in DESIGN_LISTS])
def test_design_list_queries_do_not_grow_with_rows(world, part, make):
    reader = UserFactory(username="reader")
    MembershipFactory(user=reader, trial=world.trial, site=None, role="data_manager")
    url = f"{TRIALS}{world.trial.code}/{part}" if part else TRIALS
    client = api_client(reader)
    client.get(url)  # warm up: the first request of a session may write it
    make(world, reader, 0)
    one, rows_one = _count(client, url)
    for i in range(1, 10):
        make(world, reader, i)
    ten, rows_ten = _count(client, url)
    assert rows_ten - rows_one == 9
    assert one == ten
