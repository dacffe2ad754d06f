"""Every v1 list endpoint runs a fixed number of queries: the same for 2 rows as for 6 (STYLE §8, §11),
and no more than a stated ceiling. Rows are built through the services, for two subjects, so a missing
``select_related``/``prefetch_related`` on a per-row relation shows up as a count that grows."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from assays.models import Analyte
from patients.services import outcome, safety, treatment
from tests.api.support import api_client, post_results, result_row
from tests.factories import (
    apheresed_subject,
    at,
    consented,
    days_ago,
    enrolled_subject,
    infused_subject,
    lymphodepleted_subject,
    screened,
)

pytestmark = pytest.mark.django_db


def _people(world):
    return {"trial": world.trial, "site": world.site_a, "coordinator": world.coordinator}


def _clinical(world):
    return {**_people(world), "investigator": world.investigator}


# --- row builders: ``make(world, lab, n)`` adds n rows of the endpoint for a new subject ----------------


def _subjects(world, lab, n):
    for _ in range(n):
        screened(**_people(world))


def _collections(world, lab, n):
    subject = enrolled_subject(**_clinical(world))
    for i in range(n):
        treatment.record_collection(subject=subject, collection_id=f"AP-{subject.code}-{i}",
                                    collected_on=days_ago(19 - i), by=world.coordinator)


def _donor_collections(world, lab, n):
    subject = enrolled_subject(**_clinical(world))
    for i in range(n):
        treatment.record_donor_collection(subject=subject, collection_id=f"DC-{subject.code}-{i}",
                                          collected_on=days_ago(19 - i), donor_code=f"D-{i + 100}",
                                          donor_type="third_party", by=world.coordinator)


def _lots(world, lab, n):
    subject = apheresed_subject(**_clinical(world))
    for i in range(n):
        lot = treatment.register_lot(subject=subject, product=subject.trial.products.get(),
                                     lot_number=f"LOT-{subject.code}-{i}", source="autologous",
                                     collection=subject.collections.get(), by=world.coordinator)
        if i % 2:
            treatment.release_lot(lot=lot, release_date=days_ago(10), viability_pct=Decimal("90"),
                                  car_positive_pct=Decimal("40"), total_viable_car_cells=Decimal("2e8"),
                                  qc_pass=True, by=world.coordinator)


def _bridging(world, lab, n):
    subject = enrolled_subject(**_clinical(world))
    for i in range(n):
        treatment.record_bridging(subject=subject, regimen=f"Dexamethasone cycle {i + 1}", started_on=days_ago(15 - i),
                                  by=world.coordinator)


def _courses(world, lab, n):
    for _ in range(n):  # one course (with its six doses) per subject
        lymphodepleted_subject(**_clinical(world))


def _infusions(world, lab, n):
    day0 = days_ago(6)
    subject = lymphodepleted_subject(**_clinical(world), day0=day0)
    for i in range(n):  # one dose split into n fractions on consecutive days
        treatment.record_infusion(subject=subject, lot=subject.lots.get(), dose_level=subject.trial.dose_levels.get(),
                                  cells_per_kg=Decimal(1_000_000) / n, infused_at=at(days_ago(6 - i)),
                                  fraction_number=i + 1, planned_fractions=n, by=world.coordinator)


def _events(world, lab, n):
    subject = consented(**_people(world))
    for i in range(n):
        safety.record_adverse_event(subject=subject, by=world.coordinator, data=safety.EventInput(
            category="ctcae", term=f"Nausea {i}", grade=1, onset_on=days_ago(2), related_to_product="not_related",
            related_to_lymphodepletion="not_related"))


def _medications(world, lab, n):
    subject = consented(**_people(world))
    for i in range(n):
        safety.record_medication(subject=subject, drug="paracetamol", dose=Decimal(500 + i), dose_unit="mg",
                                 route="oral", given_at=at(days_ago(1), i), by=world.coordinator)


def _responses(world, lab, n):
    subject = infused_subject(**_clinical(world))
    for i in range(n):
        outcome.record_response(subject=subject, assessed_on=days_ago(1 + i % 4), category="nr",
                                marrow_blasts_pct=Decimal(40 + i), by=world.coordinator)


def _follow_ups(world, lab, n):
    subject = infused_subject(**_clinical(world))
    for i in range(n):
        outcome.record_follow_up(subject=subject, kind="last_contact", event_on=days_ago(1 + i % 4),
                                 detail=f"Clinic visit {i}", by=world.coordinator)


def _lab_results(world, lab, n):
    subject = consented(**_people(world))
    rows = [result_row(subject, i, source_ref=f"{subject.code}-{i}", accession_number=f"{subject.code}-ACC-{i}")
            for i in range(n)]
    assert post_results(lab, {"results": rows}).status_code == 201


# (list url, row builder, query ceiling). The session request itself costs 3 queries (session, user,
# the caller's memberships); a page then costs a count and a select, plus one per prefetched relation.
LISTS = [
    ("/api/v1/subjects/", _subjects, 5),
    ("/api/v1/collections/", _collections, 5),
    ("/api/v1/donor-collections/", _donor_collections, 5),
    ("/api/v1/lots/", _lots, 5),
    ("/api/v1/bridging/", _bridging, 5),
    ("/api/v1/lymphodepletion-courses/", _courses, 7),  # + the doses, + the regimens' agents (the plan)
    ("/api/v1/infusions/", _infusions, 5),
    ("/api/v1/adverse-events/", _events, 5),
    ("/api/v1/medications/", _medications, 5),
    ("/api/v1/responses/", _responses, 5),
    ("/api/v1/follow-ups/", _follow_ups, 5),
    ("/api/v1/lab-draws/", _lab_results, 5),
    ("/api/v1/results/", _lab_results, 5),
]


def count_list_queries(client, url, params=None, *, rows):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, params or {})
    assert response.status_code == 200, response.json()
    assert len(response.json()["results"]) == rows
    return len(queries)


@pytest.mark.parametrize(("url", "make", "ceiling"), LISTS, ids=[row[0].split("/")[3] for row in LISTS])
def test_list_queries_do_not_grow_with_rows(world, lab, url, make, ceiling):
    make(world, lab, 2)
    client = api_client(world.coordinator)
    client.get(url)  # warm up: the first request of a session may write it
    two = count_list_queries(client, url, rows=2)
    make(world, lab, 4)  # a second subject's rows: three times as many in all
    six = count_list_queries(client, url, rows=6)
    assert six == two
    assert six <= ceiling


def _donor_derived_lots(world, n):
    product = world.trial.products.get()
    product.allowed_sources = ["autologous", "allogeneic"]
    product.save()
    subject = enrolled_subject(**_clinical(world))
    for i in range(n):
        donation = treatment.record_donor_collection(subject=subject, collection_id=f"DC-{subject.code}-{i}",
                                                     collected_on=days_ago(19 - i), donor_code=f"D-{i + 100}",
                                                     donor_type="third_party", by=world.coordinator)
        treatment.register_lot(subject=subject, product=product, lot_number=f"ALLO-{subject.code}-{i}",
                               source="allogeneic", donor_collection=donation, by=world.coordinator)


def test_donor_derived_lots_list_in_fixed_queries(world):
    """Each lot shows its donor collection's bag id: read in the list's own query, not one per lot."""
    _donor_derived_lots(world, 2)
    client = api_client(world.coordinator)
    client.get("/api/v1/lots/")
    two = count_list_queries(client, "/api/v1/lots/", rows=2)
    _donor_derived_lots(world, 4)
    assert count_list_queries(client, "/api/v1/lots/", rows=6) == two


def test_analyte_catalogue_queries_do_not_grow_with_rows(world):
    assert Analyte.objects.filter(units__isnull=False).distinct().count() >= 6  # seeded with their units
    client = api_client(world.coordinator)
    client.get("/api/v1/analytes/")
    two = count_list_queries(client, "/api/v1/analytes/", {"page_size": 2}, rows=2)
    six = count_list_queries(client, "/api/v1/analytes/", {"page_size": 6}, rows=6)
    assert six == two
    assert six <= 5  # session, user, count, analytes, their units (the catalogue is not site-scoped)


def test_service_token_lists_results_in_fixed_queries(world, lab):
    _lab_results(world, lab, 2)
    lab.get("/api/v1/results/")  # the token's first use stamps last_used_at
    two = count_list_queries(lab, "/api/v1/results/", rows=2)
    _lab_results(world, lab, 4)
    six = count_list_queries(lab, "/api/v1/results/", rows=6)
    assert six == two
    assert six <= 5  # the token's account and user, its address's login failures, memberships, count, results
