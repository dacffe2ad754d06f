"""Donor-derived (allogeneic) products: the donor collection as the chain of identity's first link.

subject <- donor collection -> lot -> infusion. Each rule's refusal raises its code on its field and writes
nothing; recording a donor collection makes an enrolled subject apheresed ("product source collected"), so
the whole course then runs under the same rules as an autologous one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from django.apps import apps
from django.db import IntegrityError, transaction

from config.errors import DomainError
from patients.models import (
    ApheresisCollection,
    DonorCollection,
    Infusion,
    ProductLot,
    Subject,
    SubjectStatus,
    SubjectTransition,
)
from patients.services import measurements, treatment
from tests.factories import TODAY, apheresed_subject, at, consented, days_ago, enrolled_subject
from trials.models import Product

pytestmark = pytest.mark.django_db

S = SubjectStatus
TRACKED = (Subject, SubjectTransition, ApheresisCollection, DonorCollection, ProductLot)
UNSET = object()


def _snapshot() -> dict[str, Any]:
    state: dict[str, Any] = {model.__name__: model.objects.count() for model in TRACKED}
    state["subjects"] = list(Subject.objects.order_by("pk").values_list("pk", "status"))
    state["lots"] = list(ProductLot.objects.order_by("pk").values_list("pk", "status", "release_date"))
    return state


@contextmanager
def refused(code: str, field: Any = UNSET) -> Iterator[Any]:
    before = _snapshot()
    with pytest.raises(DomainError) as err:
        yield err
    assert err.value.code == code, err.value.message
    if field is not UNSET:
        assert err.value.field == field
    assert _snapshot() == before


def people(world: Any, **kwargs: Any) -> dict[str, Any]:
    return {"coordinator": world.coordinator, "investigator": world.investigator, "trial": world.trial,
            "site": world.site_a, **kwargs}


def allow_allogeneic(trial: Any) -> Product:
    product = trial.products.get()
    product.allowed_sources = ["autologous", "allogeneic"]
    product.save()
    return product


def donate(subject: Subject, by: Any, **overrides: Any) -> DonorCollection:
    values = {"collection_id": f"DC-{subject.code}", "collected_on": days_ago(19), "donor_code": "D-2024-017",
              "donor_type": "new_donor", "hla_matched": 5, "hla_total": 10, **overrides}
    return treatment.record_donor_collection(subject=subject, by=by, **values)


def donor_lot(subject: Subject, by: Any, collection: DonorCollection, number: str = "ALLO-1") -> ProductLot:
    return treatment.register_lot(subject=subject, product=subject.trial.products.get(), lot_number=number,
                                  source="allogeneic", donor_collection=collection, by=by)


def status_of(subject: Subject) -> str:
    subject.refresh_from_db()
    return subject.status


# --- the whole donor-derived course -----------------------------------------------------------------


def test_donor_derived_course_from_enrolment_to_infusion(world):
    allow_allogeneic(world.trial)
    subject = enrolled_subject(**people(world))
    measurements.record_body_measurement(subject=subject, measured_on=days_ago(20), height_cm=Decimal("170"),
                                         weight_kg=Decimal("70"), by=world.coordinator)
    collection = donate(subject, world.coordinator)
    assert status_of(subject) == S.APHERESED
    move = subject.transitions.order_by("-pk").first()
    assert (move.from_status, move.to_status, move.effective_on) == (S.ENROLLED, S.APHERESED, days_ago(19))
    assert move.reason == f"Donor collection DC-{subject.code} (donor D-2024-017)"
    lot = donor_lot(subject, world.coordinator, collection)
    assert (lot.donor_collection, lot.collection, lot.donor_type) == (collection, None, "new_donor")
    treatment.release_lot(lot=lot, release_date=days_ago(12), viability_pct=Decimal("90"),
                          car_positive_pct=Decimal("45"), total_viable_car_cells=Decimal("2e8"), qc_pass=True,
                          by=world.coordinator)
    regimen = world.trial.regimens.get()
    course = treatment.start_lymphodepletion(subject=subject, regimen=regimen, planned_infusion_on=days_ago(5),
                                             by=world.coordinator)
    for agent in regimen.agents.order_by("pk"):
        for day in agent.days:
            treatment.record_lymphodepletion_dose(
                course=course, agent=agent, given_on=days_ago(5) + dt.timedelta(days=day),
                administered_mg=(course.bsa_m2 * agent.dose_mg_per_m2).quantize(Decimal("0.1")), by=world.coordinator)
    assert status_of(subject) == S.LYMPHODEPLETED
    infusion = treatment.record_infusion(subject=subject, lot=lot, dose_level=world.trial.dose_levels.get(),
                                         cells_per_kg=Decimal(1_000_000), infused_at=at(days_ago(5)),
                                         by=world.coordinator)
    assert infusion.lot.donor_collection == collection
    assert status_of(subject) == S.FOLLOW_UP


def test_donor_collection_is_audited(world):
    subject = enrolled_subject(**people(world))
    collection = donate(subject, world.coordinator)
    events = apps.get_model("patients", "DonorCollectionEvent").objects.filter(pgh_obj_id=collection.pk)
    assert list(events.values_list("pgh_label", "donor_code")) == [("insert", "D-2024-017")]


def test_second_donor_collection_keeps_an_apheresed_subject_apheresed(world):
    subject = enrolled_subject(**people(world))
    donate(subject, world.coordinator)
    donate(subject, world.coordinator, collection_id="DC-2", donor_type="third_party", hla_matched=None,
           hla_total=None)
    assert status_of(subject) == S.APHERESED
    assert subject.transitions.filter(to_status=S.APHERESED).count() == 1


# --- donor collection rules ---------------------------------------------------------------------------


def test_donor_collection_refused_before_enrolment_state(world):
    subject = consented(coordinator=world.coordinator, trial=world.trial, site=world.site_a)
    with refused("subject_not_ready"):
        donate(subject, world.coordinator)


def test_donor_collection_refused_in_the_future(world):
    subject = enrolled_subject(**people(world))
    with refused("date_in_future", "collected_on"):
        donate(subject, world.coordinator, collected_on=TODAY + dt.timedelta(days=2))


def test_donor_collection_for_the_subject_refused_before_enrolment(world):
    subject = enrolled_subject(**people(world))  # enrolled 20 days ago
    with refused("before_enrolment", "collected_on"):
        donate(subject, world.coordinator, collected_on=days_ago(21))
    assert status_of(subject) == S.ENROLLED


def test_off_the_shelf_collection_may_predate_enrolment(world):
    subject = enrolled_subject(**people(world))
    collection = donate(subject, world.coordinator, donor_type="third_party", collected_on=days_ago(400))
    assert collection.collected_on == days_ago(400)
    move = subject.transitions.order_by("-pk").first()
    assert (move.to_status, move.effective_on) == (S.APHERESED, days_ago(20))  # the enrolment date, not earlier


def test_duplicate_donor_bag_id_refused(world):
    subject = enrolled_subject(**people(world))
    donate(subject, world.coordinator, collection_id="BAG-1")
    with refused("duplicate_collection_id", "collection_id") as err:
        donate(subject, world.coordinator, collection_id="BAG-1")
    assert err.value.http_status == 409


def test_bag_id_of_an_apheresis_collection_refused_for_a_donor_collection(world):
    subject = apheresed_subject(**people(world))
    with refused("duplicate_collection_id", "collection_id"):
        donate(subject, world.coordinator, collection_id=subject.collections.get().collection_id)


def test_bag_id_of_a_donor_collection_refused_for_an_apheresis(world):
    subject = enrolled_subject(**people(world))
    donate(subject, world.coordinator, collection_id="BAG-1")
    with refused("duplicate_collection_id", "collection_id"):
        treatment.record_collection(subject=subject, collection_id="BAG-1", collected_on=days_ago(18),
                                    by=world.coordinator)


@pytest.mark.parametrize("code", ["Jane Doe", "SMITH", "d-2024-017", "D", "D 2024 017", "-2024"])
def test_donor_code_that_could_be_a_name_refused(world, code):
    subject = enrolled_subject(**people(world))
    with refused("donor_code_not_pseudonymous", "donor_code"):
        donate(subject, world.coordinator, donor_code=code)


def test_hsct_donor_needs_a_prior_transplant(world):
    subject = enrolled_subject(**people(world))
    with refused("no_prior_hsct", "donor_type"):
        donate(subject, world.coordinator, donor_type="hsct_donor")
    transplanted = enrolled_subject(**people(world, prior_allo_hsct=True))
    assert donate(transplanted, world.coordinator, donor_type="hsct_donor", hla_matched=10).hla_match == "10/10"


def test_hla_match_needs_both_numbers(world):
    subject = enrolled_subject(**people(world))
    with refused("hla_match_incomplete", "hla_total"):
        donate(subject, world.coordinator, hla_total=None)
    with refused("hla_match_incomplete", "hla_matched"):
        donate(subject, world.coordinator, hla_matched=None)


def test_hla_match_above_the_alleles_typed_refused(world):
    subject = enrolled_subject(**people(world))
    with refused("hla_match_above_total", "hla_matched"):
        donate(subject, world.coordinator, hla_matched=11, hla_total=10)


def test_donor_collection_refused_for_a_monitor(world):
    subject = enrolled_subject(**people(world))
    with refused("not_permitted"):
        donate(subject, world.monitor)


# --- donor-derived lots ---------------------------------------------------------------------------------


def test_lot_from_another_subjects_donor_collection_refused(world):
    allow_allogeneic(world.trial)
    subject, other = enrolled_subject(**people(world)), enrolled_subject(**people(world))
    donate(subject, world.coordinator)
    others = donate(other, world.coordinator)
    with refused("donor_collection_not_subjects", "donor_collection"):
        donor_lot(subject, world.coordinator, others)


def test_donor_derived_lot_refused_when_the_product_is_autologous_only(world):
    subject = enrolled_subject(**people(world))
    collection = donate(subject, world.coordinator)
    with refused("source_not_allowed", "source"):
        donor_lot(subject, world.coordinator, collection)


def test_release_before_the_donor_collection_refused(world):
    allow_allogeneic(world.trial)
    subject = enrolled_subject(**people(world))
    lot = donor_lot(subject, world.coordinator, donate(subject, world.coordinator, collected_on=days_ago(10)))
    with refused("release_before_collection", "release_date"):
        treatment.release_lot(lot=lot, release_date=days_ago(11), viability_pct=Decimal("90"),
                              car_positive_pct=Decimal("45"), total_viable_car_cells=Decimal("2e8"), qc_pass=True,
                              by=world.coordinator)


def test_lymphodepletion_still_needs_a_collected_source(world):
    allow_allogeneic(world.trial)
    subject = enrolled_subject(**people(world))
    with refused("subject_not_ready"):
        treatment.start_lymphodepletion(subject=subject, regimen=world.trial.regimens.get(),
                                        planned_infusion_on=days_ago(1), by=world.coordinator)


# --- the database keeps the chain of identity consistent ------------------------------------------------


def test_legacy_allogeneic_lot_without_donor_collection_is_still_valid(world):
    """Lots registered before donor collections existed keep their free donor type and no donor collection."""
    subject = enrolled_subject(**people(world))
    legacy = ProductLot.objects.create(subject=subject, product=subject.trial.products.get(), lot_number="OLD-1",
                                       source="allogeneic", donor_type="unrelated", recorded_by=world.coordinator)
    assert legacy.donor_collection is None and legacy.get_donor_type_display() == "Unrelated (legacy)"


def test_database_refuses_an_autologous_lot_with_a_donor_collection(world):
    subject = apheresed_subject(**people(world))
    collection = donate(subject, world.coordinator)
    with pytest.raises(IntegrityError), transaction.atomic():
        ProductLot.objects.create(subject=subject, product=subject.trial.products.get(), lot_number="BAD-1",
                                  source="autologous", collection=subject.collections.get(),
                                  donor_collection=collection, recorded_by=world.coordinator)


def test_database_refuses_a_donor_code_with_a_name(world):
    subject = enrolled_subject(**people(world))
    with pytest.raises(IntegrityError), transaction.atomic():
        DonorCollection.objects.create(subject=subject, donor_code="SMITH", donor_type="new_donor",
                                       collection_id="X-1", collected_on=days_ago(1), recorded_by=world.coordinator)
    assert not Infusion.objects.exists()
