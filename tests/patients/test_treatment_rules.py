"""Every rule of apheresis, product lots (chain of identity), bridging, lymphodepletion and infusion.

A refused write raises the rule's DomainError (code and field) and writes nothing: ``refused`` compares
the row counts of every treatment table, the lots' states and the subjects' status before and after.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest

from config.errors import DomainError
from patients.models import (
    ApheresisCollection,
    BodyMeasurement,
    BridgingTherapy,
    Infusion,
    LymphodepletionCourse,
    LymphodepletionDose,
    ProductLot,
    Subject,
    SubjectStatus,
    SubjectTransition,
)
from patients.services import enrolment, measurements, treatment
from patients.timeline import timeline_of
from tests.factories import (
    TODAY,
    apheresed_subject,
    at,
    build_trial,
    consented,
    days_ago,
    enrolled_subject,
    infused_subject,
    lymphodepleted_subject,
    released_lot,
)
from trials.models import LymphodepletionRegimen, Product, RegimenAgent

pytestmark = pytest.mark.django_db

S = SubjectStatus
TRACKED = (Subject, SubjectTransition, BodyMeasurement, ApheresisCollection, ProductLot, BridgingTherapy,
           LymphodepletionCourse, LymphodepletionDose, Infusion)
UNSET = object()
IN_TWO_DAYS = TODAY + dt.timedelta(days=2)



# --- helpers ---------------------------------------------------------------------------------------


def _snapshot() -> dict[str, Any]:
    state: dict[str, Any] = {model.__name__: model.objects.count() for model in TRACKED}
    state["subjects"] = list(Subject.objects.order_by("pk").values_list("pk", "status", "off_study_reason"))
    state["lots"] = list(ProductLot.objects.order_by("pk").values_list("pk", "status", "release_date", "failed_on"))
    return state


@contextmanager
def refused(code: str, field: Any = UNSET) -> Iterator[Any]:
    """The block raises ``code`` (on ``field``) and leaves every treatment table as it was."""
    before = _snapshot()
    with pytest.raises(DomainError) as err:
        yield err
    assert err.value.code == code, err.value.message
    if field is not UNSET:
        assert err.value.field == field
    assert _snapshot() == before


def people(world: Any) -> dict[str, Any]:
    return {"coordinator": world.coordinator, "investigator": world.investigator, "trial": world.trial,
            "site": world.site_a}


def status_of(subject: Subject) -> str:
    subject.refresh_from_db()
    return subject.status


def new_lot(subject: Subject, by: Any, suffix: str, *, release_on: dt.date | None = None) -> ProductLot:
    """A second autologous lot from the subject's collection; released on ``release_on`` if given."""
    lot = treatment.register_lot(subject=subject, product=subject.trial.products.get(),
                                 lot_number=f"LOT-{subject.code}-{suffix}", source="autologous",
                                 collection=subject.collections.get(), by=by)
    if release_on is None:
        return lot
    return treatment.release_lot(lot=lot, release_date=release_on, viability_pct=Decimal("90"),
                                 car_positive_pct=Decimal("40"), total_viable_car_cells=Decimal("1.5e8"),
                                 qc_pass=True, by=by)


def give_course(course: LymphodepletionCourse, by: Any, *, skip_last: bool = False) -> None:
    """All planned doses of the course at the planned mg (optionally leaving out the very last one)."""
    plan = [(agent, day) for agent in course.regimen.agents.order_by("pk") for day in agent.days]
    for agent, day in plan[:-1] if skip_last else plan:
        treatment.record_lymphodepletion_dose(
            course=course, agent=agent, given_on=course.planned_infusion_on + dt.timedelta(days=day),
            administered_mg=(course.bsa_m2 * agent.dose_mg_per_m2).quantize(Decimal("0.1")), by=by)


def open_course(world: Any, *, day0: dt.date | None = None, **kwargs: Any) -> LymphodepletionCourse:
    subject = apheresed_subject(**people(world))
    released_lot(subject=subject, coordinator=world.coordinator)
    return treatment.start_lymphodepletion(subject=subject, regimen=world.trial.regimens.get(),
                                           planned_infusion_on=day0 or days_ago(5), by=world.coordinator, **kwargs)


def infuse(subject: Subject, by: Any, *, on: dt.date, cells: Decimal = Decimal(1_000_000),
           lot: ProductLot | None = None, fraction: int = 1, of: int = 1, dose_level: Any = None) -> Infusion:
    return treatment.record_infusion(subject=subject, lot=lot or subject.lots.get(),
                                     dose_level=dose_level or subject.trial.dose_levels.get(), cells_per_kg=cells,
                                     infused_at=at(on), by=by, fraction_number=fraction, planned_fractions=of)


def allogeneic_product(trial: Any) -> Product:
    return Product.objects.create(trial=trial, code="ALLOCAR19", name="alloCAR19", target_antigens=["CD19"],
                                  scfv_origin="humanized",
                                  costimulatory_domain="4-1BB", vector="lentiviral",
                                  allowed_sources=["autologous", "allogeneic"])


# --- apheresis -------------------------------------------------------------------------------------


def test_collection_makes_an_enrolled_subject_apheresed(world):
    subject = enrolled_subject(**people(world))
    collection = treatment.record_collection(subject=subject, collection_id="AP-1", collected_on=days_ago(19),
                                             by=world.coordinator)
    assert collection.subject == subject
    assert status_of(subject) == S.APHERESED


def test_collection_refused_before_enrolment_state(world):
    subject = consented(coordinator=world.coordinator, trial=world.trial, site=world.site_a)
    with refused("subject_not_ready"):
        treatment.record_collection(subject=subject, collection_id="AP-1", collected_on=days_ago(5),
                                    by=world.coordinator)
    assert status_of(subject) == S.SCREENING


def test_collection_refused_before_enrolment_date(world):
    subject = enrolled_subject(**people(world))
    with refused("before_enrolment", "collected_on"):
        treatment.record_collection(subject=subject, collection_id="AP-1", collected_on=days_ago(21),
                                    by=world.coordinator)
    assert status_of(subject) == S.ENROLLED


def test_collection_refused_in_future(world):
    subject = enrolled_subject(**people(world))
    with refused("date_in_future", "collected_on"):
        treatment.record_collection(subject=subject, collection_id="AP-1", collected_on=IN_TWO_DAYS,
                                    by=world.coordinator)


def test_collection_refused_for_a_monitor(world):
    subject = enrolled_subject(**people(world))
    with refused("not_permitted"):
        treatment.record_collection(subject=subject, collection_id="AP-1", collected_on=days_ago(19),
                                    by=world.monitor)


def test_collection_refused_after_consent_withdrawn(world):
    subject = enrolled_subject(**people(world))
    enrolment.withdraw_consent(subject=subject, withdrawn_on=days_ago(1), reason="Moved away",
                               by=world.coordinator)
    with refused("subject_not_ready"):  # withdrawal takes the subject off study; the state check comes first
        treatment.record_collection(subject=subject, collection_id="AP-1", collected_on=days_ago(1),
                                    by=world.coordinator)
    assert status_of(subject) == S.OFF_STUDY


# --- product lots: chain of identity ---------------------------------------------------------------


def test_lot_registered_and_released_from_own_collection(world):
    subject = apheresed_subject(**people(world))
    lot = released_lot(subject=subject, coordinator=world.coordinator)
    lot.refresh_from_db()
    assert lot.status == ProductLot.Status.RELEASED and lot.collection == subject.collections.get()
    assert lot.qc_pass is True


def test_autologous_lot_from_another_subjects_collection_refused(world):
    subject = apheresed_subject(**people(world))
    other = apheresed_subject(**people(world))
    with refused("collection_not_subjects", "collection"):
        treatment.register_lot(subject=subject, product=world.trial.products.get(), lot_number="LOT-X",
                               source="autologous", collection=other.collections.get(), by=world.coordinator)


def test_autologous_lot_without_collection_refused(world):
    subject = apheresed_subject(**people(world))
    with refused("collection_not_subjects", "collection"):
        treatment.register_lot(subject=subject, product=world.trial.products.get(), lot_number="LOT-X",
                               source="autologous", collection=None, by=world.coordinator)


def donor_collection(subject: Subject, by: Any, bag: str = "DC-1") -> Any:
    return treatment.record_donor_collection(subject=subject, collection_id=bag, collected_on=days_ago(19),
                                             donor_code="D-2024-017", donor_type="new_donor", by=by)


def test_autologous_lot_with_donor_collection_refused(world):
    subject = apheresed_subject(**people(world))
    donated = donor_collection(subject, world.coordinator)
    with refused("donor_for_autologous", "donor_collection"):
        treatment.register_lot(subject=subject, product=world.trial.products.get(), lot_number="LOT-X",
                               source="autologous", collection=subject.collections.get(),
                               donor_collection=donated, by=world.coordinator)


def test_source_the_product_does_not_allow_refused(world):
    subject = apheresed_subject(**people(world))
    donated = donor_collection(subject, world.coordinator)
    with refused("source_not_allowed", "source"):
        treatment.register_lot(subject=subject, product=world.trial.products.get(), lot_number="LOT-X",
                               source="allogeneic", donor_collection=donated, by=world.coordinator)


def test_allogeneic_lot_without_donor_collection_refused(world):
    subject = apheresed_subject(**people(world))
    with refused("donor_required", "donor_collection"):
        treatment.register_lot(subject=subject, product=allogeneic_product(world.trial), lot_number="LOT-X",
                               source="allogeneic", by=world.coordinator)


def test_allogeneic_lot_from_subjects_collection_refused(world):
    subject = apheresed_subject(**people(world))
    donated = donor_collection(subject, world.coordinator)
    with refused("collection_for_allogeneic", "collection"):
        treatment.register_lot(subject=subject, product=allogeneic_product(world.trial), lot_number="LOT-X",
                               source="allogeneic", donor_collection=donated, collection=subject.collections.get(),
                               by=world.coordinator)


def test_allogeneic_lot_from_its_donor_collection_takes_the_donor_type(world):
    subject = apheresed_subject(**people(world))
    donated = donor_collection(subject, world.coordinator)
    lot = treatment.register_lot(subject=subject, product=allogeneic_product(world.trial), lot_number="LOT-X",
                                 source="allogeneic", donor_collection=donated, by=world.coordinator)
    assert lot.collection is None and lot.donor_collection == donated and lot.donor_type == "new_donor"


def test_product_of_another_trial_refused(world):
    subject = apheresed_subject(**people(world))
    with refused("product_not_in_trial", "product"):
        treatment.register_lot(subject=subject, product=build_trial().products.get(), lot_number="LOT-X",
                               source="autologous", collection=subject.collections.get(), by=world.coordinator)


def test_lot_refused_for_a_subject_not_in_treatment(world):
    subject = consented(coordinator=world.coordinator, trial=world.trial, site=world.site_a)
    with refused("subject_not_ready"):
        treatment.register_lot(subject=subject, product=world.trial.products.get(), lot_number="LOT-X",
                               source="allogeneic", by=world.coordinator)


def test_releasing_a_lot_that_failed_qc_refused(world):
    subject = apheresed_subject(**people(world))
    lot = new_lot(subject, world.coordinator, "A")
    with refused("qc_failed", "qc_pass"):
        treatment.release_lot(lot=lot, release_date=days_ago(10), viability_pct=Decimal("50"),
                              car_positive_pct=Decimal("10"), total_viable_car_cells=Decimal("1e7"), qc_pass=False,
                              by=world.coordinator)


def test_release_without_cell_count_refused(world):
    subject = apheresed_subject(**people(world))
    lot = new_lot(subject, world.coordinator, "A")
    with refused("release_results_required", "total_viable_car_cells"):
        treatment.release_lot(lot=lot, release_date=days_ago(10), viability_pct=Decimal("90"),
                              car_positive_pct=Decimal("40"), total_viable_car_cells=None, qc_pass=True,
                              by=world.coordinator)


def test_release_before_collection_refused(world):
    subject = apheresed_subject(**people(world))  # collected 19 days ago
    lot = new_lot(subject, world.coordinator, "A")
    with refused("release_before_collection", "release_date"):
        treatment.release_lot(lot=lot, release_date=days_ago(20), viability_pct=Decimal("90"),
                              car_positive_pct=Decimal("40"), total_viable_car_cells=Decimal("1e8"), qc_pass=True,
                              by=world.coordinator)


def test_release_in_future_refused(world):
    subject = apheresed_subject(**people(world))
    lot = new_lot(subject, world.coordinator, "A")
    with refused("date_in_future", "release_date"):
        treatment.release_lot(lot=lot, release_date=IN_TWO_DAYS, viability_pct=Decimal("90"),
                              car_positive_pct=Decimal("40"), total_viable_car_cells=Decimal("1e8"), qc_pass=True,
                              by=world.coordinator)


def test_releasing_a_released_lot_again_refused(world):
    subject = apheresed_subject(**people(world))
    lot = released_lot(subject=subject, coordinator=world.coordinator)
    with refused("lot_not_in_manufacture"):
        treatment.release_lot(lot=lot, release_date=days_ago(1), viability_pct=Decimal("90"),
                              car_positive_pct=Decimal("40"), total_viable_car_cells=Decimal("1e8"), qc_pass=True,
                              by=world.coordinator)


def test_manufacturing_failure_without_reason_refused(world):
    subject = apheresed_subject(**people(world))
    lot = new_lot(subject, world.coordinator, "A")
    with refused("reason_required", "reason"):
        treatment.record_manufacturing_failure(lot=lot, failed_on=days_ago(10), reason="  ", by=world.coordinator)


def test_manufacturing_failure_in_future_refused(world):
    subject = apheresed_subject(**people(world))
    lot = new_lot(subject, world.coordinator, "A")
    with refused("date_in_future", "failed_on"):
        treatment.record_manufacturing_failure(lot=lot, failed_on=IN_TWO_DAYS, reason="Low expansion",
                                               by=world.coordinator)


def test_failed_lot_cannot_be_released_nor_fail_again(world):
    subject = apheresed_subject(**people(world))
    lot = new_lot(subject, world.coordinator, "A")
    failed = treatment.record_manufacturing_failure(lot=lot, failed_on=days_ago(10), reason="Low expansion",
                                                    by=world.coordinator)
    assert failed.status == ProductLot.Status.FAILED and failed.qc_pass is False
    with refused("lot_not_in_manufacture"):
        treatment.release_lot(lot=lot, release_date=days_ago(9), viability_pct=Decimal("90"),
                              car_positive_pct=Decimal("40"), total_viable_car_cells=Decimal("1e8"), qc_pass=True,
                              by=world.coordinator)
    with refused("lot_not_in_manufacture"):
        treatment.record_manufacturing_failure(lot=lot, failed_on=days_ago(9), reason="Again", by=world.coordinator)


# --- bridging --------------------------------------------------------------------------------------


def test_bridging_accepted_while_apheresed(world):
    subject = apheresed_subject(**people(world))
    bridging = treatment.record_bridging(subject=subject, regimen="Vincristine + dexamethasone",
                                         started_on=days_ago(18), ended_on=days_ago(15), by=world.coordinator)
    assert bridging.subject == subject


def test_bridging_refused_after_lymphodepletion(world):
    subject = lymphodepleted_subject(**people(world))
    with refused("subject_not_ready"):
        treatment.record_bridging(subject=subject, regimen="Inotuzumab", started_on=days_ago(2),
                                  by=world.coordinator)
    assert status_of(subject) == S.LYMPHODEPLETED


@pytest.mark.parametrize("field", ["started_on", "ended_on"])
def test_bridging_refused_in_future(world, field):
    subject = apheresed_subject(**people(world))
    dates = {"started_on": days_ago(1), "ended_on": None, field: IN_TWO_DAYS}
    with refused("date_in_future", field):
        treatment.record_bridging(subject=subject, regimen="Inotuzumab", by=world.coordinator, **dates)


def test_bridging_refused_before_consent(world):
    subject = apheresed_subject(**people(world))  # consented 29 days ago
    with refused("no_consent", "started_on"):
        treatment.record_bridging(subject=subject, regimen="Inotuzumab", started_on=days_ago(30),
                                  by=world.coordinator)


def test_bridging_ending_before_it_starts_refused(world):
    subject = apheresed_subject(**people(world))
    with refused("ends_before_start", "ended_on"):
        treatment.record_bridging(subject=subject, regimen="Inotuzumab", started_on=days_ago(5),
                                  ended_on=days_ago(6), by=world.coordinator)


# --- lymphodepletion -------------------------------------------------------------------------------


def test_course_stores_mosteller_bsa_and_measurement(world):
    course = open_course(world)
    course.refresh_from_db()
    assert course.bsa_formula == "mosteller" and course.bsa_m2 == Decimal("1.818")
    assert (course.measurement.height_cm, course.measurement.weight_kg) == (Decimal("170"), Decimal("70"))
    assert course.course_number == 1


def test_course_stores_dubois_bsa(world):
    course = open_course(world, bsa_formula="dubois")
    course.refresh_from_db()
    assert course.bsa_formula == "dubois" and course.bsa_m2 == Decimal("1.810")


def test_course_uses_latest_measurement_on_or_before_first_dose(world):
    subject = apheresed_subject(**people(world))
    released_lot(subject=subject, coordinator=world.coordinator)
    before = measurements.record_body_measurement(subject=subject, measured_on=days_ago(11), height_cm=Decimal("120"),
                                                  weight_kg=Decimal("22"), by=world.coordinator)
    measurements.record_body_measurement(subject=subject, measured_on=days_ago(9), height_cm=Decimal("170"),
                                         weight_kg=Decimal("90"), by=world.coordinator)  # after day -5
    course = treatment.start_lymphodepletion(subject=subject, regimen=world.trial.regimens.get(),
                                             planned_infusion_on=days_ago(5), by=world.coordinator)
    assert course.measurement == before and course.bsa_m2 == Decimal("0.856")


@pytest.mark.parametrize(("formula", "flu_mg", "cy_mg"), [("mosteller", "54.5", "454.5"),
                                                          ("dubois", "54.3", "452.5")])
def test_planned_mg_is_mg_per_m2_times_bsa(world, formula, flu_mg, cy_mg):
    course = open_course(world, bsa_formula=formula)
    give_course(course, world.coordinator)
    planned = {(d.agent.agent, d.day): d.planned_mg for d in course.doses.select_related("agent")}
    assert planned == {**{("fludarabine", day): Decimal(flu_mg) for day in (-5, -4, -3)},
                       **{("cyclophosphamide", day): Decimal(cy_mg) for day in (-5, -4, -3)}}


def test_dose_outside_tolerance_without_reason_refused(world):
    course = open_course(world)
    flu = course.regimen.agents.get(agent="fludarabine")  # planned 54.5 mg, tolerance 10 % -> 49.05..59.95
    with refused("dose_deviation_needs_reason", "deviation_reason"):
        treatment.record_lymphodepletion_dose(course=course, agent=flu, given_on=days_ago(10),
                                              administered_mg=Decimal("60.0"), deviation_reason=" ",
                                              by=world.coordinator)


def test_dose_at_tolerance_edge_needs_no_reason(world):
    course = open_course(world)
    flu = course.regimen.agents.get(agent="fludarabine")
    dose = treatment.record_lymphodepletion_dose(course=course, agent=flu, given_on=days_ago(10),
                                                 administered_mg=Decimal("59.9"), by=world.coordinator)
    assert dose.deviation_reason == "" and dose.planned_mg == Decimal("54.5")


def test_dose_outside_tolerance_with_reason_accepted(world):
    course = open_course(world)
    flu = course.regimen.agents.get(agent="fludarabine")
    dose = treatment.record_lymphodepletion_dose(course=course, agent=flu, given_on=days_ago(10),
                                                 administered_mg=Decimal("40.0"), by=world.coordinator,
                                                 deviation_reason="Renal impairment: 25 % reduction")
    dose.refresh_from_db()
    assert (dose.planned_mg, dose.administered_mg, dose.day) == (Decimal("54.5"), Decimal("40.0"), -5)
    assert dose.deviation_reason.startswith("Renal")


def test_dose_on_a_day_not_in_the_regimen_refused(world):
    course = open_course(world)
    flu = course.regimen.agents.get(agent="fludarabine")
    with refused("day_not_in_regimen", "given_on"):
        treatment.record_lymphodepletion_dose(course=course, agent=flu, given_on=days_ago(7),  # day -2
                                              administered_mg=Decimal("54.5"), by=world.coordinator)


def test_same_agent_day_twice_refused(world):
    course = open_course(world)
    flu = course.regimen.agents.get(agent="fludarabine")
    treatment.record_lymphodepletion_dose(course=course, agent=flu, given_on=days_ago(10),
                                          administered_mg=Decimal("54.5"), by=world.coordinator)
    with refused("dose_already_recorded"):
        treatment.record_lymphodepletion_dose(course=course, agent=flu, given_on=days_ago(10),
                                              administered_mg=Decimal("54.5"), by=world.coordinator)


def test_agent_of_another_regimen_refused(world):
    course = open_course(world)
    other = LymphodepletionRegimen.objects.create(trial=world.trial, code="BENDA", name="Benda", dose_tolerance_pct=10)
    benda = RegimenAgent.objects.create(regimen=other, agent="bendamustine", dose_mg_per_m2=90, days=[-5, -4])
    with refused("agent_not_in_regimen", "agent"):
        treatment.record_lymphodepletion_dose(course=course, agent=benda, given_on=days_ago(10),
                                              administered_mg=Decimal("163.6"), by=world.coordinator)


def test_dose_in_future_refused(world):
    course = open_course(world, day0=TODAY + dt.timedelta(days=6))
    flu = course.regimen.agents.get(agent="fludarabine")
    with refused("date_in_future", "given_on"):
        treatment.record_lymphodepletion_dose(course=course, agent=flu, given_on=TODAY + dt.timedelta(days=2),
                                              administered_mg=Decimal("54.5"), by=world.coordinator)


def test_dose_after_infusion_refused_course_closed(world):
    subject = infused_subject(**people(world))
    course = subject.ld_courses.get()
    flu = course.regimen.agents.get(agent="fludarabine")
    with refused("course_closed"):
        treatment.record_lymphodepletion_dose(course=course, agent=flu, given_on=days_ago(8),
                                              administered_mg=Decimal("54.5"), by=world.coordinator)


def test_dose_after_consent_withdrawn_refused(world):
    course = open_course(world)
    enrolment.withdraw_consent(subject=course.subject, withdrawn_on=days_ago(11), reason="Declines treatment",
                               by=world.coordinator)
    flu = course.regimen.agents.get(agent="fludarabine")
    with refused("course_closed"):  # off study: the state check comes before the consent check
        treatment.record_lymphodepletion_dose(course=course, agent=flu, given_on=days_ago(10),
                                              administered_mg=Decimal("54.5"), by=world.coordinator)


def test_subject_lymphodepleted_only_after_last_planned_dose(world):
    course = open_course(world)
    give_course(course, world.coordinator, skip_last=True)
    assert status_of(course.subject) == S.APHERESED
    cy = course.regimen.agents.get(agent="cyclophosphamide")
    treatment.record_lymphodepletion_dose(course=course, agent=cy, given_on=days_ago(8),
                                          administered_mg=Decimal("454.5"), by=world.coordinator)
    assert status_of(course.subject) == S.LYMPHODEPLETED


def test_course_without_measurement_refused(world):
    subject = enrolled_subject(**people(world))
    treatment.record_collection(subject=subject, collection_id="AP-1", collected_on=days_ago(19),
                                by=world.coordinator)
    released_lot(subject=subject, coordinator=world.coordinator)
    with refused("no_measurement", "planned_infusion_on"):
        treatment.start_lymphodepletion(subject=subject, regimen=world.trial.regimens.get(),
                                        planned_infusion_on=days_ago(5), by=world.coordinator)


def test_course_with_only_later_measurement_refused(world):
    subject = apheresed_subject(**people(world))  # measured 20 days ago
    released_lot(subject=subject, coordinator=world.coordinator)
    with refused("no_measurement", "planned_infusion_on"):
        treatment.start_lymphodepletion(subject=subject, regimen=world.trial.regimens.get(),
                                        planned_infusion_on=days_ago(16), by=world.coordinator)  # day -5 = -21


def test_course_without_product_refused(world):
    subject = apheresed_subject(**people(world))
    lot = new_lot(subject, world.coordinator, "A")
    treatment.record_manufacturing_failure(lot=lot, failed_on=days_ago(10), reason="Low expansion",
                                           by=world.coordinator)
    with refused("no_product"):
        treatment.start_lymphodepletion(subject=subject, regimen=world.trial.regimens.get(),
                                        planned_infusion_on=days_ago(5), by=world.coordinator)


def test_course_while_lot_in_manufacture_accepted(world):
    subject = apheresed_subject(**people(world))
    new_lot(subject, world.coordinator, "A")
    course = treatment.start_lymphodepletion(subject=subject, regimen=world.trial.regimens.get(),
                                             planned_infusion_on=days_ago(5), by=world.coordinator)
    assert course.course_number == 1


def test_second_open_course_refused(world):
    course = open_course(world)
    with refused("course_open"):
        treatment.start_lymphodepletion(subject=course.subject, regimen=world.trial.regimens.get(),
                                        planned_infusion_on=days_ago(4), by=world.coordinator)


def test_course_refused_before_apheresis(world):
    subject = enrolled_subject(**people(world))
    with refused("subject_not_ready"):
        treatment.start_lymphodepletion(subject=subject, regimen=world.trial.regimens.get(),
                                        planned_infusion_on=days_ago(5), by=world.coordinator)
    assert status_of(subject) == S.ENROLLED


def test_regimen_of_another_trial_refused(world):
    subject = apheresed_subject(**people(world))
    released_lot(subject=subject, coordinator=world.coordinator)
    with refused("regimen_not_in_trial", "regimen"):
        treatment.start_lymphodepletion(subject=subject, regimen=build_trial().regimens.get(),
                                        planned_infusion_on=days_ago(5), by=world.coordinator)


# --- infusion --------------------------------------------------------------------------------------


def test_infusion_total_cells_from_latest_weight(world):
    subject = lymphodepleted_subject(**people(world))  # 70 kg measured 20 days ago
    latest = measurements.record_body_measurement(subject=subject, measured_on=days_ago(6), height_cm=Decimal("170"),
                                                  weight_kg=Decimal("80"), by=world.coordinator)
    infusion = infuse(subject, world.coordinator, on=days_ago(5), cells=Decimal(1_100_000))
    infusion.refresh_from_db()
    assert infusion.measurement == latest and infusion.weight_kg == Decimal("80.0")
    assert infusion.total_cells == Decimal(88_000_000)
    assert status_of(subject) == S.FOLLOW_UP
    assert timeline_of(subject).day0 == days_ago(5)


@pytest.mark.parametrize(("edge", "ok"), [("min", True), ("max", True), ("min-1", False), ("max+1", False)])
def test_infusion_window_after_last_ld_dose(world, edge, ok):
    trial = world.trial
    subject = lymphodepleted_subject(**people(world), day0=days_ago(12))  # last LD dose 15 days ago
    last = subject.ld_courses.get().doses.order_by("-given_on").first().given_on
    assert last == days_ago(15)
    offset = {"min": trial.infusion_window_min_days, "max": trial.infusion_window_max_days,
              "min-1": trial.infusion_window_min_days - 1, "max+1": trial.infusion_window_max_days + 1}[edge]
    on = last + dt.timedelta(days=offset)
    if ok:
        infuse(subject, world.coordinator, on=on)
        assert status_of(subject) == S.FOLLOW_UP
    else:
        with refused("outside_lymphodepletion_window", "infused_at"):
            infuse(subject, world.coordinator, on=on)
        assert status_of(subject) == S.LYMPHODEPLETED


def test_infusion_window_follows_trial_setting(world):
    world.trial.infusion_window_min_days, world.trial.infusion_window_max_days = 4, 10
    world.trial.save()
    subject = lymphodepleted_subject(**people(world), day0=days_ago(12))  # last LD 15 days ago
    with refused("outside_lymphodepletion_window", "infused_at"):
        infuse(subject, world.coordinator, on=days_ago(12))  # 3 days: fine for 2..7, too early for 4..10
    infuse(subject, world.coordinator, on=days_ago(6))  # 9 days: too late for 2..7, fine for 4..10
    assert status_of(subject) == S.FOLLOW_UP


@pytest.mark.parametrize("cells", [Decimal(1_210_000), Decimal(790_000)])
def test_dose_outside_dose_level_tolerance_refused(world, cells):
    subject = lymphodepleted_subject(**people(world))  # DL1 1e6/kg ± 20 %
    with refused("dose_outside_level", "cells_per_kg"):
        infuse(subject, world.coordinator, on=days_ago(5), cells=cells)
    assert status_of(subject) == S.LYMPHODEPLETED


@pytest.mark.parametrize("cells", [Decimal(1_200_000), Decimal(800_000)])
def test_dose_at_dose_level_edges_accepted(world, cells):
    subject = lymphodepleted_subject(**people(world))
    infuse(subject, world.coordinator, on=days_ago(5), cells=cells)
    assert status_of(subject) == S.FOLLOW_UP


def test_dose_level_of_another_trial_refused(world):
    subject = lymphodepleted_subject(**people(world))
    with refused("dose_level_not_in_trial", "dose_level"):
        infuse(subject, world.coordinator, on=days_ago(5), dose_level=build_trial().dose_levels.get())


def test_infusion_of_enrolled_subject_refused(world):
    subject = enrolled_subject(**people(world))
    donor = lymphodepleted_subject(**people(world))
    with refused("subject_not_ready"):
        infuse(subject, world.coordinator, on=days_ago(5), lot=donor.lots.get())
    assert status_of(subject) == S.ENROLLED


def test_infusion_before_ld_complete_refused(world):
    course = open_course(world)
    give_course(course, world.coordinator, skip_last=True)
    with refused("subject_not_ready"):
        infuse(course.subject, world.coordinator, on=days_ago(5))
    assert status_of(course.subject) == S.APHERESED


def test_infusion_in_future_refused(world):
    subject = lymphodepleted_subject(**people(world), day0=TODAY)  # last LD 3 days ago
    with refused("date_in_future", "infused_at"):
        infuse(subject, world.coordinator, on=IN_TWO_DAYS)


def test_infusion_after_consent_withdrawn_refused(world):
    subject = lymphodepleted_subject(**people(world))
    enrolment.withdraw_consent(subject=subject, withdrawn_on=days_ago(6), reason="Declines infusion",
                               by=world.coordinator)
    with refused("consent_withdrawn"):
        infuse(subject, world.coordinator, on=days_ago(5))
    assert status_of(subject) == S.OFF_STUDY


def test_infusion_refused_for_a_monitor(world):
    subject = lymphodepleted_subject(**people(world))
    with refused("not_permitted"):
        infuse(subject, world.monitor, on=days_ago(5))


def test_lot_of_another_subject_refused(world):
    subject = lymphodepleted_subject(**people(world))
    other = lymphodepleted_subject(**people(world))
    with refused("lot_not_released_for_subject", "lot"):
        infuse(subject, world.coordinator, on=days_ago(5), lot=other.lots.get())


def test_lot_in_manufacture_refused(world):
    subject = apheresed_subject(**people(world))
    lot = new_lot(subject, world.coordinator, "A")
    course = treatment.start_lymphodepletion(subject=subject, regimen=world.trial.regimens.get(),
                                             planned_infusion_on=days_ago(5), by=world.coordinator)
    give_course(course, world.coordinator)
    assert status_of(subject) == S.LYMPHODEPLETED
    with refused("lot_not_released_for_subject", "lot"):
        infuse(subject, world.coordinator, on=days_ago(5), lot=lot)


def test_failed_lot_refused(world):
    subject = lymphodepleted_subject(**people(world))
    lot = new_lot(subject, world.coordinator, "B")
    treatment.record_manufacturing_failure(lot=lot, failed_on=days_ago(9), reason="Sterility", by=world.coordinator)
    with refused("lot_not_released_for_subject", "lot"):
        infuse(subject, world.coordinator, on=days_ago(5), lot=lot)


# --- split dosing ----------------------------------------------------------------------------------


def test_split_dose_10_30_60(world):
    subject = lymphodepleted_subject(**people(world))  # day 0 five days ago
    first = infuse(subject, world.coordinator, on=days_ago(5), cells=Decimal(100_000), fraction=1, of=3)
    assert status_of(subject) == S.INFUSED
    infuse(subject, world.coordinator, on=days_ago(4), cells=Decimal(300_000), fraction=2, of=3)
    assert status_of(subject) == S.INFUSED
    infuse(subject, world.coordinator, on=days_ago(3), cells=Decimal(600_000), fraction=3, of=3)
    assert status_of(subject) == S.FOLLOW_UP
    assert treatment.delivered_cells_per_kg(subject, 1) == subject.trial.dose_levels.get().cells_per_kg
    assert timeline_of(subject).day0 == first.infused_on == days_ago(5)
    assert sorted(subject.infusions.values_list("fraction_number", "total_cells")) == [
        (1, Decimal(7_000_000)), (2, Decimal(21_000_000)), (3, Decimal(42_000_000))]


def test_fraction_out_of_order_refused(world):
    subject = lymphodepleted_subject(**people(world))
    infuse(subject, world.coordinator, on=days_ago(5), cells=Decimal(100_000), fraction=1, of=3)
    with refused("fraction_out_of_order", "fraction_number"):
        infuse(subject, world.coordinator, on=days_ago(4), cells=Decimal(600_000), fraction=3, of=3)
    assert status_of(subject) == S.INFUSED


def test_fraction_beyond_plan_refused(world):
    subject = lymphodepleted_subject(**people(world))
    infuse(subject, world.coordinator, on=days_ago(5), cells=Decimal(500_000), fraction=1, of=2)
    with refused("fraction_beyond_plan", "fraction_number"):
        infuse(subject, world.coordinator, on=days_ago(4), cells=Decimal(500_000), fraction=2, of=1)


def test_fractions_above_maximum_refused(world):
    subject = lymphodepleted_subject(**people(world))
    infuse(subject, world.coordinator, on=days_ago(5), cells=Decimal(100_000), fraction=1, of=3)
    with refused("dose_outside_level", "cells_per_kg"):
        infuse(subject, world.coordinator, on=days_ago(4), cells=Decimal(1_150_000), fraction=2, of=3)


def test_last_fraction_below_minimum_refused(world):
    subject = lymphodepleted_subject(**people(world))
    infuse(subject, world.coordinator, on=days_ago(5), cells=Decimal(100_000), fraction=1, of=3)
    infuse(subject, world.coordinator, on=days_ago(4), cells=Decimal(300_000), fraction=2, of=3)
    with refused("dose_outside_level", "cells_per_kg"):
        infuse(subject, world.coordinator, on=days_ago(3), cells=Decimal(300_000), fraction=3, of=3)
    assert status_of(subject) == S.INFUSED


def test_fraction_with_another_lot_refused(world):
    subject = lymphodepleted_subject(**people(world))
    infuse(subject, world.coordinator, on=days_ago(5), cells=Decimal(100_000), fraction=1, of=3)
    second = new_lot(subject, world.coordinator, "B", release_on=days_ago(5))
    with refused("fraction_mismatch", "lot"):
        infuse(subject, world.coordinator, on=days_ago(4), cells=Decimal(300_000), fraction=2, of=3, lot=second)


def test_fraction_outside_split_window_refused(world):
    subject = lymphodepleted_subject(**people(world), day0=days_ago(12))
    infuse(subject, world.coordinator, on=days_ago(12), cells=Decimal(100_000), fraction=1, of=2)
    late = days_ago(12) + dt.timedelta(days=world.trial.split_dose_max_days + 1)
    with refused("fraction_outside_split_window", "infused_at"):
        infuse(subject, world.coordinator, on=late, cells=Decimal(900_000), fraction=2, of=2)


def test_fraction_before_previous_refused(world):
    subject = lymphodepleted_subject(**people(world))
    infuse(subject, world.coordinator, on=days_ago(4), cells=Decimal(100_000), fraction=1, of=2)
    with refused("fraction_outside_split_window", "infused_at"):
        infuse(subject, world.coordinator, on=days_ago(5), cells=Decimal(900_000), fraction=2, of=2)


def test_further_fraction_after_course_complete_refused(world):
    subject = infused_subject(**people(world))
    with refused("subject_not_ready"):
        infuse(subject, world.coordinator, on=days_ago(4), cells=Decimal(100_000), fraction=2, of=2)
    assert status_of(subject) == S.FOLLOW_UP


# --- re-infusion -----------------------------------------------------------------------------------


def test_reinfusion_refused_when_trial_does_not_allow_it(world):
    assert world.trial.reinfusion_allowed is False
    subject = infused_subject(**people(world))
    new_lot(subject, world.coordinator, "B", release_on=days_ago(2))
    with refused("reinfusion_not_allowed"):
        treatment.start_lymphodepletion(subject=subject, regimen=world.trial.regimens.get(),
                                        planned_infusion_on=TODAY, by=world.coordinator)
    assert status_of(subject) == S.FOLLOW_UP


def test_reinfusion_needs_a_product(world):
    world.trial.reinfusion_allowed = True
    world.trial.save()
    subject = infused_subject(**people(world))  # its only lot is infused
    with refused("no_product"):
        treatment.start_lymphodepletion(subject=subject, regimen=world.trial.regimens.get(),
                                        planned_infusion_on=TODAY, by=world.coordinator)


def test_reinfusion_with_second_course_and_new_lot(world):
    world.trial.reinfusion_allowed = True
    world.trial.save()
    subject = infused_subject(**people(world), day0=days_ago(14))
    first_lot = subject.lots.get()
    second_lot = new_lot(subject, world.coordinator, "B", release_on=days_ago(8))
    course = treatment.start_lymphodepletion(subject=subject, regimen=world.trial.regimens.get(),
                                             planned_infusion_on=days_ago(1), by=world.coordinator)
    assert course.course_number == 2
    give_course(course, world.coordinator)
    assert status_of(subject) == S.LYMPHODEPLETED
    with refused("lot_already_infused"):
        infuse(subject, world.coordinator, on=days_ago(1), lot=first_lot)
    infusion = infuse(subject, world.coordinator, on=days_ago(1), lot=second_lot)
    assert (infusion.course_number, infusion.fraction_number, infusion.lot) == (2, 1, second_lot)
    assert status_of(subject) == S.FOLLOW_UP
    timeline = timeline_of(subject)
    assert timeline.day0 == days_ago(14)  # day 0 stays the first infusion of the first course
    assert timeline.day0s == (days_ago(14), days_ago(1))  # and the second course has its own
    assert timeline.position(TODAY) == (14, 2, 1)  # study day 14, day 1 of course 2


def test_lot_already_infused_refused_in_second_course_even_for_same_subject(world):
    world.trial.reinfusion_allowed = True
    world.trial.save()
    subject = infused_subject(**people(world), day0=days_ago(14))
    new_lot(subject, world.coordinator, "B")  # in manufacture: enough to start a course
    course = treatment.start_lymphodepletion(subject=subject, regimen=world.trial.regimens.get(),
                                             planned_infusion_on=days_ago(1), by=world.coordinator)
    give_course(course, world.coordinator)
    with refused("lot_already_infused"):
        infuse(subject, world.coordinator, on=days_ago(1), lot=subject.lots.get(status="released"))
    assert status_of(subject) == S.LYMPHODEPLETED
