"""Chain of identity, bridging, lymphodepletion and CAR-T infusion (protocol §5.1-5.3, DESIGN "Rules").

subject -> apheresis collection -> product lot -> infusion: a lot is infused only into its own
subject, only once released, and only in one course. A donor-derived (allogeneic) lot comes from a
donor collection recorded for its recipient instead (subject <- donor collection -> lot -> infusion).
APHERESED means "the product's source is collected": the subject's own apheresis or, for a
donor-derived product, the donor collection moves an enrolled subject there, so lymphodepletion and
everything after it follow the same rules for both sources. Lymphodepletion doses are computed from the
body surface area of the latest height and weight; infusion doses from cells/kg and the latest weight.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Max, Min, Sum

from config import display
from config.errors import DomainError, RuleViolation, StateConflict
from patients.dosing import BsaFormula, body_surface_area, planned_dose_mg, within_tolerance
from patients.models import (
    ApheresisCollection,
    BodyMeasurement,
    BridgingTherapy,
    DonorCollection,
    DonorType,
    Infusion,
    LymphodepletionCourse,
    LymphodepletionDose,
    ProductLot,
    Subject,
    SubjectStatus,
)
from patients.models.treatment import DONOR_CODE_MESSAGE, DONOR_CODE_PATTERN
from patients.selectors import doses_of, latest_measurement, ld_courses_of, records_of, site_today
from patients.services.enrolment import _lock, check_can_enter, check_consented, check_not_future, move_subject
from patients.timeline import local_date_of
from trials.models import DoseLevel, LymphodepletionRegimen, Product, RegimenAgent

S = SubjectStatus
TREATMENT_STATES = (S.ENROLLED, S.APHERESED, S.LYMPHODEPLETED, S.INFUSED, S.FOLLOW_UP)


def check_treatment_state(*, subject: Subject, allowed: tuple[str, ...], what: str) -> None:
    if subject.status not in allowed:
        raise StateConflict("subject_not_ready", f"{subject.code} is {subject.get_status_display().lower()}; "
                            f"{what} is not possible now.")


# --- apheresis and product lots ------------------------------------------------------------------


def check_collection(*, subject: Subject, collected_on: dt.date, collection_id: str = "") -> None:
    check_treatment_state(subject=subject, allowed=(S.ENROLLED, S.APHERESED, S.FOLLOW_UP), what="apheresis")
    check_not_future(day=collected_on, site=subject.site, field="collected_on")
    check_consented(subject=subject, on=collected_on, field="collected_on")
    check_new_bag_id(collection_id=collection_id)
    if subject.enrolled_on and collected_on < subject.enrolled_on:
        raise RuleViolation("before_enrolment", f"{subject.code} was enrolled on {subject.enrolled_on:%d %b %Y}.",
                            field="collected_on")


@transaction.atomic
def record_collection(*, subject: Subject, collection_id: str, collected_on: dt.date, by: User,
                      cd3_cells_1e9: Decimal | None = None) -> ApheresisCollection:
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    check_collection(subject=subject, collected_on=collected_on, collection_id=collection_id)
    collection = ApheresisCollection(subject=subject, collection_id=collection_id, collected_on=collected_on,
                                     cd3_cells_1e9=cd3_cells_1e9, recorded_by=by)
    collection.full_clean()
    collection.save()
    if subject.status == S.ENROLLED:
        move_subject(subject=subject, to=S.APHERESED, on=collected_on, by=by, reason=f"Apheresis {collection_id}")
    return collection


def check_new_bag_id(*, collection_id: str) -> None:
    """A bag ID names one collection, the subject's own or a donor's (a blank one is the form's to refuse)."""
    if collection_id and (ApheresisCollection.objects.filter(collection_id=collection_id).exists()
            or DonorCollection.objects.filter(collection_id=collection_id).exists()):
        raise StateConflict("duplicate_collection_id", f"Collection {collection_id} is already recorded.",
                            field="collection_id")


# --- donor collections (donor-derived products) ---------------------------------------------------

DONOR_CODE = re.compile(DONOR_CODE_PATTERN)
BANKED = (DonorType.THIRD_PARTY,)  # collected from a healthy donor before any recipient was known


def check_donor_collection(*, subject: Subject, collection_id: str, collected_on: dt.date, donor_code: str,
                           donor_type: str, hla_matched: int | None = None, hla_total: int | None = None) -> None:
    """The recipient is enrolled and consented; a donor collected for this subject (their HSCT donor or a
    new donor) gives on or after enrolment; an off-the-shelf (third-party) collection may predate it."""
    check_treatment_state(subject=subject, allowed=(S.ENROLLED, S.APHERESED, S.FOLLOW_UP),
                          what="a donor collection")
    check_not_future(day=collected_on, site=subject.site, field="collected_on")
    banked = donor_type in BANKED
    check_consented(subject=subject, on=site_today(subject.site) if banked else collected_on, field="collected_on")
    check_new_bag_id(collection_id=collection_id)
    if not banked and subject.enrolled_on and collected_on < subject.enrolled_on:
        raise RuleViolation("before_enrolment", f"{subject.code} was enrolled on {subject.enrolled_on:%d %b %Y}.",
                            field="collected_on")
    check_donor(subject=subject, donor_code=donor_code, donor_type=donor_type, hla_matched=hla_matched,
                hla_total=hla_total)


def check_donor(*, subject: Subject, donor_code: str, donor_type: str, hla_matched: int | None,
                hla_total: int | None) -> None:
    """A pseudonymous donor code (never a name), a donor type that fits the subject, a coherent HLA match."""
    if not DONOR_CODE.fullmatch(donor_code) or not any(c.isdigit() for c in donor_code):
        raise RuleViolation("donor_code_not_pseudonymous", DONOR_CODE_MESSAGE, field="donor_code")
    if donor_type == DonorType.HSCT_DONOR and not subject.prior_allo_hsct:
        raise RuleViolation("no_prior_hsct", f"{subject.code} has no prior allogeneic HSCT; choose a new or "
                            "third-party donor.", field="donor_type")
    if (hla_matched is None) != (hla_total is None):
        raise RuleViolation("hla_match_incomplete", "Give the HLA alleles matched and typed (e.g. 10 of 10), or "
                            "neither.", field="hla_total" if hla_total is None else "hla_matched")
    if hla_matched is not None and hla_total is not None and hla_matched > hla_total:
        raise RuleViolation("hla_match_above_total", f"{hla_matched} of {hla_total} HLA alleles cannot match.",
                            field="hla_matched")


@transaction.atomic
def record_donor_collection(*, subject: Subject, collection_id: str, collected_on: dt.date, donor_code: str,
                            donor_type: str, by: User, hla_matched: int | None = None,
                            hla_total: int | None = None) -> DonorCollection:
    """The donor collection of a donor-derived product; it makes an enrolled subject apheresed (source collected)."""
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    check_donor_collection(subject=subject, collection_id=collection_id, collected_on=collected_on,
                           donor_code=donor_code, donor_type=donor_type, hla_matched=hla_matched, hla_total=hla_total)
    collection = DonorCollection(subject=subject, collection_id=collection_id, collected_on=collected_on,
                                 donor_code=donor_code, donor_type=donor_type, hla_matched=hla_matched,
                                 hla_total=hla_total, recorded_by=by)
    collection.full_clean()
    collection.save()
    if subject.status == S.ENROLLED:
        move_subject(subject=subject, to=S.APHERESED, on=max(collected_on, subject.enrolled_on or collected_on),
                     by=by, reason=f"Donor collection {collection_id} (donor {donor_code})")
    return collection


def check_lot_registration(*, subject: Subject, product: Product, source: str,
                           collection: ApheresisCollection | None,
                           donor_collection: DonorCollection | None = None) -> None:
    check_treatment_state(subject=subject, allowed=TREATMENT_STATES, what="registering a product lot")
    check_consented(subject=subject, on=site_today(subject.site), field="lot_number")
    if product.trial_id != subject.trial_id:
        raise RuleViolation("product_not_in_trial", f"Choose a product of {subject.trial.code}.", field="product")
    if source not in product.allowed_sources:
        raise RuleViolation("source_not_allowed", f"{product.name} allows {', '.join(product.allowed_sources)} "
                            "products only.", field="source")
    if source == Product.Source.AUTOLOGOUS:
        if collection is None or collection.subject_id != subject.pk:
            raise RuleViolation("collection_not_subjects", f"An autologous lot comes from a collection of "
                                f"{subject.code}.", field="collection")
        if donor_collection is not None:
            raise RuleViolation("donor_for_autologous", "An autologous lot has no donor collection.",
                                field="donor_collection")
    elif collection is not None:
        raise RuleViolation("collection_for_allogeneic", "An allogeneic lot comes from a donor, not from the "
                            "subject's collection.", field="collection")
    elif donor_collection is None:
        raise RuleViolation("donor_required", "Give the donor collection of a donor-derived lot.",
                            field="donor_collection")
    elif donor_collection.subject_id != subject.pk:
        raise RuleViolation("donor_collection_not_subjects", f"A donor-derived lot comes from a donor collection "
                            f"recorded for {subject.code}.", field="donor_collection")


def check_new_lot_number(*, lot_number: str) -> None:
    """A lot number identifies one product bag across the whole system (chain of identity)."""
    if ProductLot.objects.filter(lot_number=lot_number).exists():
        raise StateConflict("duplicate_lot_number", f"Lot {lot_number} is already registered.", field="lot_number")


@transaction.atomic
def register_lot(*, subject: Subject, product: Product, lot_number: str, source: str, by: User,
                 collection: ApheresisCollection | None = None,
                 donor_collection: DonorCollection | None = None) -> ProductLot:
    """A lot in manufacture; a donor-derived lot takes its donor type from its donor collection."""
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    check_lot_registration(subject=subject, product=product, source=source, collection=collection,
                           donor_collection=donor_collection)
    check_new_lot_number(lot_number=lot_number)
    lot = ProductLot(subject=subject, product=product, lot_number=lot_number, source=source, collection=collection,
                     donor_collection=donor_collection,
                     donor_type=donor_collection.donor_type if donor_collection else "", recorded_by=by)
    lot.full_clean()
    lot.save()
    return lot


def check_release(*, lot: ProductLot, release_date: dt.date, qc_pass: bool,
                  total_viable_car_cells: Decimal | None) -> None:
    if lot.status != ProductLot.Status.MANUFACTURING:
        raise StateConflict("lot_not_in_manufacture", f"Lot {lot.lot_number} is {lot.get_status_display().lower()}.")
    check_not_future(day=release_date, site=lot.subject.site, field="release_date")
    source = lot.collection or lot.donor_collection
    if source and release_date < source.collected_on:
        raise RuleViolation("release_before_collection", f"Collected on {source.collected_on:%d %b %Y}.",
                            field="release_date")
    if not qc_pass:
        raise RuleViolation("qc_failed", "A lot that failed QC cannot be released; record a manufacturing "
                            "failure instead.", field="qc_pass")
    if total_viable_car_cells is None:
        raise RuleViolation("release_results_required", "Give the total viable CAR+ cells.",
                            field="total_viable_car_cells")


@transaction.atomic
def release_lot(*, lot: ProductLot, release_date: dt.date, viability_pct: Decimal, car_positive_pct: Decimal,
                total_viable_car_cells: Decimal | None, qc_pass: bool, by: User) -> ProductLot:
    _lock(lot.subject)
    lot = (ProductLot.objects.select_for_update(of=("self",))
           .select_related("subject__site", "collection", "donor_collection").get(pk=lot.pk))
    check_can_enter(user=by, subject=lot.subject)
    check_release(lot=lot, release_date=release_date, qc_pass=qc_pass, total_viable_car_cells=total_viable_car_cells)
    lot.status, lot.release_date, lot.qc_pass = ProductLot.Status.RELEASED, release_date, qc_pass
    lot.viability_pct, lot.car_positive_pct, lot.total_viable_car_cells = (viability_pct, car_positive_pct,
                                                                           total_viable_car_cells)
    lot.full_clean()
    lot.save()
    return lot


def check_manufacturing_failure(*, lot: ProductLot, failed_on: dt.date, reason: str) -> None:
    """Only a lot in manufacture fails; the failure has a reason and a date that is not in the future."""
    if lot.status != ProductLot.Status.MANUFACTURING:
        raise StateConflict("lot_not_in_manufacture", f"Lot {lot.lot_number} is {lot.get_status_display().lower()}.")
    if not reason.strip():
        raise RuleViolation("reason_required", "Give the reason the manufacture failed.", field="reason")
    check_not_future(day=failed_on, site=lot.subject.site, field="failed_on")


@transaction.atomic
def record_manufacturing_failure(*, lot: ProductLot, failed_on: dt.date, reason: str,
                                 by: User) -> ProductLot:
    _lock(lot.subject)
    lot = ProductLot.objects.select_for_update(of=("self",)).select_related("subject__site").get(pk=lot.pk)
    check_can_enter(user=by, subject=lot.subject)
    check_manufacturing_failure(lot=lot, failed_on=failed_on, reason=reason)
    lot.status, lot.failed_on, lot.failure_reason, lot.qc_pass = ProductLot.Status.FAILED, failed_on, reason, False
    lot.full_clean()
    lot.save()
    return lot


# --- bridging ------------------------------------------------------------------------------------


def check_bridging_dates(*, subject: Subject, started_on: dt.date, ended_on: dt.date | None) -> None:
    """Bridging dates: not in the future, after consent, ending after it starts (entry and corrections)."""
    check_not_future(day=started_on, site=subject.site, field="started_on")
    check_not_future(day=ended_on, site=subject.site, field="ended_on")
    check_consented(subject=subject, on=started_on, field="started_on")
    if ended_on is not None and ended_on < started_on:
        raise RuleViolation("ends_before_start", "Bridging cannot end before it starts.", field="ended_on")


@transaction.atomic
def record_bridging(*, subject: Subject, regimen: str, started_on: dt.date, by: User,
                    ended_on: dt.date | None = None) -> BridgingTherapy:
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    check_treatment_state(subject=subject, allowed=(S.ENROLLED, S.APHERESED), what="bridging therapy")
    check_bridging_dates(subject=subject, started_on=started_on, ended_on=ended_on)
    bridging = BridgingTherapy(subject=subject, regimen=regimen, started_on=started_on, ended_on=ended_on,
                               recorded_by=by)
    bridging.full_clean()
    bridging.save()
    return bridging


# --- lymphodepletion -----------------------------------------------------------------------------


def check_lymphodepletion_course(*, subject: Subject, regimen: LymphodepletionRegimen,
                                 planned_infusion_on: dt.date) -> int:
    """Returns the course number: 1, or 2+ for a re-infusion where the trial allows it."""
    if regimen.trial_id != subject.trial_id:
        raise RuleViolation("regimen_not_in_trial", f"Choose a regimen of {subject.trial.code}.", field="regimen")
    if subject.status == S.FOLLOW_UP:
        if not subject.trial.reinfusion_allowed:
            raise StateConflict("reinfusion_not_allowed", f"{subject.trial.code} does not allow re-infusion.")
    else:
        check_treatment_state(subject=subject, allowed=(S.APHERESED,), what="lymphodepletion")
    # The subject's courses, doses, lots and infusions as the subject page lists them (``shared_reads``
    # there; read afresh here when guarding a write). A lot is infused only to its own subject (check_infusion).
    if {c.pk for c in ld_courses_of(subject)} - {d.course_id for d in doses_of(subject)}:
        raise StateConflict("course_open", "A lymphodepletion course without doses is already open.")
    check_consented(subject=subject, on=site_today(subject.site), field="planned_infusion_on")
    lots = records_of(subject, "lots")
    infused = {i.lot_id for i in records_of(subject, "infusions", "lot", "dose_level")}
    released = any(lot.status == ProductLot.Status.RELEASED and lot.pk not in infused for lot in lots)
    if not released and not any(lot.status == ProductLot.Status.MANUFACTURING for lot in lots):
        raise StateConflict("no_product", f"{subject.code} has no product lot in manufacture or released.")
    if bsa_measurement(subject=subject, regimen=regimen, planned_infusion_on=planned_infusion_on) is None:
        raise RuleViolation("no_measurement", "Record height and weight on or before the first lymphodepletion "
                            "day.", field="planned_infusion_on")
    return (subject.ld_courses.aggregate(n=Max("course_number"))["n"] or 0) + 1


def bsa_measurement(*, subject: Subject, regimen: LymphodepletionRegimen,
                    planned_infusion_on: dt.date) -> BodyMeasurement | None:
    """The height and weight the course's BSA comes from: the latest on or before the first dose day."""
    first_day = min(day for agent in regimen.agents.all() for day in agent.days)
    return latest_measurement(subject, on=planned_infusion_on + dt.timedelta(days=first_day))


@transaction.atomic
def start_lymphodepletion(*, subject: Subject, regimen: LymphodepletionRegimen, planned_infusion_on: dt.date,
                          by: User, bsa_formula: str = BsaFormula.MOSTELLER) -> LymphodepletionCourse:
    """Open a course: BSA from the latest height and weight on or before the first dose day."""
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    number = check_lymphodepletion_course(subject=subject, regimen=regimen, planned_infusion_on=planned_infusion_on)
    measurement = bsa_measurement(subject=subject, regimen=regimen, planned_infusion_on=planned_infusion_on)
    assert measurement is not None  # check_lymphodepletion_course refuses a course without one
    bsa = body_surface_area(height_cm=measurement.height_cm, weight_kg=measurement.weight_kg,
                            formula=BsaFormula(bsa_formula))
    course = LymphodepletionCourse(subject=subject, course_number=number, regimen=regimen,
                                   planned_infusion_on=planned_infusion_on, measurement=measurement,
                                   bsa_formula=bsa_formula, bsa_m2=bsa, recorded_by=by)
    course.full_clean()
    course.save()
    return course


def check_lymphodepletion_dose(*, course: LymphodepletionCourse, agent: RegimenAgent, given_on: dt.date,
                               administered_mg: Decimal, deviation_reason: str) -> tuple[int, Decimal]:
    """Returns (day relative to planned infusion, planned mg)."""
    subject = course.subject
    if subject.status not in (S.APHERESED, S.FOLLOW_UP, S.LYMPHODEPLETED) or course.subject.infusions.filter(
            course_number=course.course_number).exists():
        raise StateConflict("course_closed", "This lymphodepletion course is closed.")
    if agent.regimen_id != course.regimen_id:
        raise RuleViolation("agent_not_in_regimen", f"{agent} is not part of {course.regimen}.", field="agent")
    day = (given_on - course.planned_infusion_on).days
    if day not in agent.days:
        raise RuleViolation("day_not_in_regimen", f"{agent.get_agent_display()} is given on days "
                            f"{', '.join(map(str, agent.days))}; {given_on:%d %b %Y} is day {day}.", field="given_on")
    check_not_future(day=given_on, site=subject.site, field="given_on")
    check_consented(subject=subject, on=given_on, field="given_on")
    collected = subject.collections.aggregate(first=Min("collected_on"))["first"]
    if collected is not None and given_on < collected and course.course_number == 1:
        raise RuleViolation("before_apheresis", f"Lymphodepletion follows apheresis ({collected:%d %b %Y}).",
                            field="given_on")
    if course.doses.filter(agent=agent, day=day).exists():
        raise StateConflict("dose_already_recorded", f"{agent.get_agent_display()} day {day} is already recorded.")
    planned = planned_dose_mg(dose_mg_per_m2=agent.dose_mg_per_m2, bsa_m2=course.bsa_m2)
    outside = not within_tolerance(planned=planned, administered=administered_mg,
                                   tolerance_pct=course.regimen.dose_tolerance_pct)
    if outside and not deviation_reason.strip():
        raise RuleViolation("dose_deviation_needs_reason", f"{administered_mg} mg is outside "
                            f"±{course.regimen.dose_tolerance_pct}% of the planned {planned} mg "
                            f"({agent.dose_mg_per_m2} mg/m² × {course.bsa_m2} m²); give a deviation reason.",
                            field="deviation_reason")
    return day, planned


@transaction.atomic
def record_lymphodepletion_dose(*, course: LymphodepletionCourse, agent: RegimenAgent, given_on: dt.date,
                                administered_mg: Decimal, by: User,
                                deviation_reason: str = "") -> LymphodepletionDose:
    """One agent on one day. The course's last planned dose makes the subject lymphodepleted."""
    subject = _lock(course.subject)
    course = LymphodepletionCourse.objects.select_related("regimen").get(pk=course.pk)
    course.subject = subject
    check_can_enter(user=by, subject=subject)
    day, planned = check_lymphodepletion_dose(course=course, agent=agent, given_on=given_on,
                                              administered_mg=administered_mg, deviation_reason=deviation_reason)
    dose = LymphodepletionDose(course=course, agent=agent, day=day, given_on=given_on, planned_mg=planned,
                               administered_mg=administered_mg, deviation_reason=deviation_reason, recorded_by=by)
    dose.full_clean()
    dose.save()
    planned_count = sum(len(a.days) for a in course.regimen.agents.all())
    if course.doses.count() == planned_count and subject.status in (S.APHERESED, S.FOLLOW_UP):
        move_subject(subject=subject, to=S.LYMPHODEPLETED, on=given_on, by=by,
                     reason=f"Lymphodepletion course {course.course_number} completed")
    return dose


@dataclass(frozen=True)
class DoseInput:
    """One administered lymphodepletion dose, as a site records it."""

    agent: RegimenAgent
    given_on: dt.date
    administered_mg: Decimal
    deviation_reason: str = ""


@dataclass(frozen=True)
class PlannedDose:
    agent: RegimenAgent
    day: int
    planned_on: dt.date
    planned_mg: Decimal


def course_plan(course: LymphodepletionCourse) -> list[PlannedDose]:
    """Every planned dose of the course: agent, day, date and mg from the course's BSA (DOMAIN 5.7)."""
    plan = [PlannedDose(agent=agent, day=day, planned_on=course.planned_infusion_on + dt.timedelta(days=day),
                        planned_mg=planned_dose_mg(dose_mg_per_m2=agent.dose_mg_per_m2, bsa_m2=course.bsa_m2))
            for agent in course.regimen.agents.all() for day in agent.days]
    return sorted(plan, key=lambda dose: (dose.day, dose.agent.agent))  # as the doses are listed


@transaction.atomic
def record_lymphodepletion_doses(*, course: LymphodepletionCourse, doses: list[DoseInput],
                                 by: User) -> list[LymphodepletionDose]:
    """Several doses of one course in one transaction: all are recorded, or none. Each passes
    ``check_lymphodepletion_dose``; a refusal names the dose by its position (``doses[2].given_on``)."""
    if not doses:
        raise RuleViolation("no_doses", "Give at least one dose.", field="doses")
    recorded = []
    for position, dose in sorted(enumerate(doses), key=lambda item: item[1].given_on):
        try:
            recorded.append(record_lymphodepletion_dose(course=course, agent=dose.agent, given_on=dose.given_on,
                                                        administered_mg=dose.administered_mg,
                                                        deviation_reason=dose.deviation_reason, by=by))
        except DomainError as err:  # the same error, naming the dose in the request
            err.field = f"doses[{position}].{err.field}" if err.field else f"doses[{position}]"
            err.message = f"Dose {position + 1}: {err.message}"
            raise
    return recorded


@transaction.atomic
def record_lymphodepletion_course(*, subject: Subject, regimen: LymphodepletionRegimen, planned_infusion_on: dt.date,
                                  by: User, bsa_formula: str = BsaFormula.MOSTELLER,
                                  doses: list[DoseInput] | None = None) -> LymphodepletionCourse:
    """Open a course and, when the site sends them with it, record its administered doses: one transaction."""
    course = start_lymphodepletion(subject=subject, regimen=regimen, planned_infusion_on=planned_infusion_on,
                                   bsa_formula=bsa_formula, by=by)
    if doses:
        record_lymphodepletion_doses(course=course, doses=doses, by=by)
    return course


# --- infusion ------------------------------------------------------------------------------------


def check_infusion(*, subject: Subject, lot: ProductLot, dose_level: DoseLevel, cells_per_kg: Decimal,
                   infused_on: dt.date, fraction_number: int, planned_fractions: int) -> int:
    """Protocol rules for a CAR-T infusion fraction. Returns the course number."""
    check_consented(subject=subject, on=infused_on, field="infused_at")
    course = subject.ld_courses.order_by("-course_number").first()
    if course is None:
        raise StateConflict("subject_not_ready", f"{subject.code} has no lymphodepletion course.")
    previous = subject.infusions.filter(course_number=course.course_number).order_by("fraction_number")
    if fraction_number == 1:
        check_treatment_state(subject=subject, allowed=(S.LYMPHODEPLETED,), what="infusion")
    else:
        check_treatment_state(subject=subject, allowed=(S.INFUSED,), what="a further fraction")
    if lot.subject_id != subject.pk or not lot.released:
        raise RuleViolation("lot_not_released_for_subject", f"Lot {lot.lot_number} is not a released product of "
                            f"{subject.code}.", field="lot")
    if lot.infusions.exclude(course_number=course.course_number, subject=subject).exists():
        raise StateConflict("lot_already_infused", f"Lot {lot.lot_number} was infused in an earlier course.")
    if lot.release_date and infused_on < lot.release_date:
        raise RuleViolation("before_release", f"Lot {lot.lot_number} was released on {lot.release_date:%d %b %Y}.",
                            field="infused_at")
    if dose_level.trial_id != subject.trial_id:
        raise RuleViolation("dose_level_not_in_trial", f"Choose a dose level of {subject.trial.code}.",
                            field="dose_level")
    check_not_future(day=infused_on, site=subject.site, field="infused_at")
    _check_fraction_order(previous=list(previous), fraction_number=fraction_number,
                          planned_fractions=planned_fractions, lot=lot, dose_level=dose_level, infused_on=infused_on,
                          max_days=subject.trial.split_dose_max_days)
    if fraction_number == 1:
        last_ld = course.doses.aggregate(last=Max("given_on"))["last"]
        trial = subject.trial
        if last_ld is None or not (trial.infusion_window_min_days <= (infused_on - last_ld).days
                                   <= trial.infusion_window_max_days):
            raise RuleViolation("outside_lymphodepletion_window", f"Infuse {trial.infusion_window_min_days} to "
                                f"{trial.infusion_window_max_days} days after the last lymphodepletion dose "
                                f"({last_ld:%d %b %Y})." if last_ld else "No lymphodepletion dose is recorded.",
                                field="infused_at")
    _check_fraction_dose(previous=list(previous), dose_level=dose_level, cells_per_kg=cells_per_kg,
                         last=fraction_number == planned_fractions)
    if latest_measurement(subject, on=infused_on) is None:  # total cells = cells/kg × this weight
        raise RuleViolation("no_measurement", "Record the weight on or before the infusion.", field="infused_at")
    return course.course_number


def _check_fraction_order(*, previous: list[Infusion], fraction_number: int, planned_fractions: int,
                          lot: ProductLot, dose_level: DoseLevel, infused_on: dt.date, max_days: int) -> None:
    if fraction_number != len(previous) + 1:
        raise RuleViolation("fraction_out_of_order", f"The next fraction is number {len(previous) + 1}.",
                            field="fraction_number")
    if fraction_number > planned_fractions:
        raise RuleViolation("fraction_beyond_plan", f"Only {planned_fractions} fraction(s) are planned.",
                            field="fraction_number")
    if previous:
        first = previous[0]
        if planned_fractions != first.planned_fractions or lot.pk != first.lot_id or \
                dose_level.pk != first.dose_level_id:
            raise RuleViolation("fraction_mismatch", "Every fraction of a split dose uses the first fraction's "
                                "lot, dose level and number of planned fractions.", field="lot")
        if infused_on < previous[-1].infused_on or (infused_on - first.infused_on).days > max_days:
            raise RuleViolation("fraction_outside_split_window", f"Fractions follow one another within {max_days} "
                                f"days of the first ({first.infused_on:%d %b %Y}).", field="infused_at")


def _check_fraction_dose(*, previous: list[Infusion], dose_level: DoseLevel, cells_per_kg: Decimal,
                         last: bool) -> None:
    """The fractions add up to the dose level, within its tolerance."""
    total = sum((i.cells_per_kg for i in previous), Decimal(0)) + cells_per_kg
    allowed = (f"{dose_level.code} allows {display.scientific(dose_level.min_cells_per_kg)} to "
               f"{display.cells_per_kg(dose_level.max_cells_per_kg)} in all")
    if total > dose_level.max_cells_per_kg or (last and total < dose_level.min_cells_per_kg):
        raise RuleViolation("dose_outside_level", f"{allowed}; the fractions add up to {display.scientific(total)}.",
                            field="cells_per_kg")


@transaction.atomic
def record_infusion(*, subject: Subject, lot: ProductLot, dose_level: DoseLevel, cells_per_kg: Decimal,
                    infused_at: dt.datetime, by: User, fraction_number: int = 1,
                    planned_fractions: int = 1) -> Infusion:
    """Record a fraction; total cells = cells/kg × the latest weight on or before the infusion."""
    subject = _lock(subject)
    check_can_enter(user=by, subject=subject)
    infused_on = local_date_of(infused_at, subject.site.tzinfo)
    lot = ProductLot.objects.select_for_update().get(pk=lot.pk)
    course_number = check_infusion(subject=subject, lot=lot, dose_level=dose_level, cells_per_kg=cells_per_kg,
                                   infused_on=infused_on, fraction_number=fraction_number,
                                   planned_fractions=planned_fractions)
    measurement = latest_measurement(subject, on=infused_on)
    assert measurement is not None  # check_infusion refuses an infusion without a weight
    infusion = Infusion(subject=subject, lot=lot, dose_level=dose_level, course_number=course_number,
                        fraction_number=fraction_number, planned_fractions=planned_fractions,
                        infused_at=infused_at, infused_on=infused_on, cells_per_kg=cells_per_kg,
                        measurement=measurement, weight_kg=measurement.weight_kg,
                        total_cells=(cells_per_kg * measurement.weight_kg).quantize(Decimal(1)), recorded_by=by)
    infusion.full_clean()
    infusion.save()
    if fraction_number == 1:
        move_subject(subject=subject, to=S.INFUSED, on=infused_on, by=by,
                     reason=f"CAR-T infusion, course {course_number}, lot {lot.lot_number}")
    if fraction_number == planned_fractions:
        move_subject(subject=subject, to=S.FOLLOW_UP, on=infused_on, by=by, reason="Infusion course complete")
    return infusion


def delivered_cells_per_kg(subject: Subject, course_number: int) -> Decimal:
    return subject.infusions.filter(course_number=course_number).aggregate(t=Sum("cells_per_kg"))["t"] or Decimal(0)
