"""The coordinator's desk: which records the protocol allows next for a subject (reads only).

``next_actions`` asks the services' own ``check_*`` rules, with the values a coordinator would start from
(today's date at the site, the subject's released lot, the trial's regimen...): a rule that refuses on the
subject's state (``StateConflict``) means "not now"; a ``RuleViolation`` is about values still to be typed,
so the action is offered and its form says what is wrong on the field. No rule is restated here; the
rules share their reads of the subject (``config.reads``), as nothing is written while they are asked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet

from config.compiled import compiled
from config.errors import DomainError, StateConflict
from config.reads import shared_reads
from locking.services import check_writable
from patients.models import (
    AdverseEvent,
    FollowUp,
    LymphodepletionCourse,
    ProductLot,
    ResponseAssessment,
    Subject,
)
from patients.selectors import doses_of, ld_courses_of, records_of, site_today
from patients.services import outcome, safety, treatment
from patients.timeline import VisitWindow, timeline_of
from trials.models import LymphodepletionRegimen, Product, Visit
from trials.selectors import visit_schedule


@dataclass(frozen=True)
class NextAction:
    """One button of the subject page: the add form of ``model`` with ``initial`` values filled in, or the
    change page of the record ``object_id`` (a lot to release, a course's doses, an event's assessments)."""

    key: str
    label: str
    model: str  # model name in the patients app, e.g. "infusion"
    initial: dict[str, Any] = field(default_factory=dict)
    object_id: int | None = None


def allows(rule: Callable[[], object]) -> bool:
    """Whether ``rule`` leaves the action open: refused on state (409) is "not now"; a refused value is not."""
    try:
        rule()
    except StateConflict:
        return False
    except DomainError:
        return True
    return True


def next_actions(subject: Subject, *, today: dt.date | None = None) -> list[NextAction]:
    """The records the protocol allows next for ``subject``, in the order of the course; none while the
    subject is frozen or locked (the subject page shows why)."""
    with shared_reads():  # the rules below read the subject's lock, consents and timeline once between them
        if not allows(lambda: check_writable(trial_id=subject.trial_id, site_id=subject.site_id,
                                             subject_id=subject.pk)):
            return []
        today = today or site_today(subject.site)
        courses = ld_courses_of(subject)  # by number; each course's subject is ``subject`` (the reverse relation)
        known = _Known(_of_trial(subject, Product, "code"), courses[-1] if courses else None)
        found: list[NextAction] = []
        for step in (_collection, _lots, _lymphodepletion, _infusion, _safety, _response, _follow_up):
            found += step(subject, today, known)
        return found


def _of_trial(subject: Subject, model: type[Product] | type[LymphodepletionRegimen], *order: str) -> list[Any]:
    """The subject's trial's products or regimens in ``order`` (one query, its SQL compiled once:
    ``config.compiled``), each with its trial, as ``subject.trial.<relation>`` reads them."""
    def build(trial_id: int) -> QuerySet[Any]:
        return model._default_manager.filter(trial_id=trial_id).order_by(*order)

    rows = compiled(("desk: of the trial", model, order), build).rows(subject.trial_id)
    for row in rows:
        row.trial = subject.trial
    return rows


@dataclass(frozen=True)
class _Known:
    """What several steps start from, read once: the trial's products (by code), the latest course."""

    products: list[Product]
    course: LymphodepletionCourse | None


def _collection(subject: Subject, today: dt.date, known: _Known) -> list[NextAction]:
    sources = {s for p in known.products for s in p.allowed_sources}
    found = []
    if Product.Source.AUTOLOGOUS in sources and allows(
            lambda: treatment.check_collection(subject=subject, collected_on=today)):
        found.append(NextAction("collection", "Apheresis collection", "apheresiscollection", {"subject": subject.pk}))
    if sources - {Product.Source.AUTOLOGOUS} and allows(lambda: treatment.check_donor_collection(
            subject=subject, collection_id="", collected_on=today, donor_code="", donor_type="")):
        found.append(NextAction("donor-collection", "Donor collection", "donorcollection", {"subject": subject.pk}))
    return found


def _lots(subject: Subject, today: dt.date, known: _Known) -> list[NextAction]:
    found = []
    product = known.products[0] if known.products else None
    lots = records_of(subject, "lots")
    made_own, made_donor = {lot.collection_id for lot in lots}, {lot.donor_collection_id for lot in lots}
    own = max((c for c in records_of(subject, "collections") if c.pk not in made_own),
              key=lambda c: (c.collected_on, c.pk), default=None)
    donor = max((d for d in records_of(subject, "donor_collections") if d.pk not in made_donor),
                key=lambda d: (d.collected_on, d.pk), default=None)
    if product is not None and (own or donor) is not None:
        source = Product.Source.AUTOLOGOUS if own else next(
            (s for s in product.allowed_sources if s != Product.Source.AUTOLOGOUS), "")
        donor = None if own else donor

        def register() -> None:
            treatment.check_lot_registration(subject=subject, product=product, source=source, collection=own,
                                             donor_collection=donor)

        if allows(register):
            initial = {"subject": subject.pk, "product": product.pk, "source": source}
            initial.update({"collection": own.pk} if own else {"donor_collection": donor.pk} if donor else {})
            found.append(NextAction("lot", "Register product lot", "productlot", initial))
    for lot in sorted((lot for lot in lots if lot.status == ProductLot.Status.MANUFACTURING), key=lambda lot: lot.pk):
        def release(lot: ProductLot = lot) -> None:
            treatment.check_release(lot=lot, release_date=today, qc_pass=True, total_viable_car_cells=Decimal(1))

        if allows(release):
            found.append(NextAction("lot-release", f"Release lot {lot.lot_number}", "productlot", object_id=lot.pk))
    return found


def _lymphodepletion(subject: Subject, today: dt.date, known: _Known) -> list[NextAction]:
    found = []
    course = known.course
    if course is not None:
        given = {(d.agent_id, d.day) for d in doses_of(subject) if d.course_id == course.pk}
        pending = [d for d in treatment.course_plan(course) if (d.agent.pk, d.day) not in given]
        if pending and allows(lambda: treatment.check_lymphodepletion_dose(
                course=course, agent=pending[0].agent, given_on=pending[0].planned_on,
                administered_mg=pending[0].planned_mg, deviation_reason="")):
            found.append(NextAction("doses", f"Lymphodepletion doses (course {course.course_number})",
                                    "lymphodepletioncourse", object_id=course.pk))
    regimen = next(iter(_of_trial(subject, LymphodepletionRegimen, "code")), None)
    if regimen is not None and allows(lambda: treatment.check_lymphodepletion_course(
            subject=subject, regimen=regimen, planned_infusion_on=today)):
        found.append(NextAction("lymphodepletion", "Lymphodepletion course", "lymphodepletioncourse",
                                {"subject": subject.pk, "regimen": regimen.pk}))
    return found


def _infusion(subject: Subject, today: dt.date, known: _Known) -> list[NextAction]:
    course = known.course
    if course is None:
        return []
    infusions = records_of(subject, "infusions", "lot", "dose_level")
    fractions = sorted((i for i in infusions if i.course_number == course.course_number),
                       key=lambda i: i.fraction_number)
    previous = fractions[-1] if fractions else None
    infused = {i.lot_id for i in infusions}
    ready = [lot for lot in records_of(subject, "lots") if lot.status == ProductLot.Status.RELEASED
             and lot.pk not in infused]
    lot = previous.lot if previous else min(
        ready, key=lambda lot: (lot.release_date is None, lot.release_date or dt.date.min, lot.pk), default=None)
    dose_level = previous.dose_level if previous else subject.trial.dose_levels.order_by("code").first()
    if lot is None or dose_level is None:
        return []
    number, planned = (previous.fraction_number + 1, previous.planned_fractions) if previous else (1, 1)
    if previous and number > planned:
        return []
    if not allows(lambda: treatment.check_infusion(
            subject=subject, lot=lot, dose_level=dose_level, cells_per_kg=dose_level.cells_per_kg, infused_on=today,
            fraction_number=number, planned_fractions=planned)):
        return []
    label = "CAR-T infusion" if number == 1 else f"CAR-T infusion, fraction {number} of {planned}"
    return [NextAction("infusion", label, "infusion", {
        "subject": subject.pk, "lot": lot.pk, "dose_level": dose_level.pk, "fraction_number": number,
        "planned_fractions": planned})]


def _safety(subject: Subject, today: dt.date, known: _Known) -> list[NextAction]:
    probe = safety.EventInput(category=AdverseEvent.Category.CTCAE, term="", onset_on=today, grade=1,
                              related_to_product="", related_to_lymphodepletion="")
    if not allows(lambda: safety.check_adverse_event(subject=subject, data=probe)):
        return []
    found = [NextAction("adverse-event", "Adverse event", "adverseevent",
                        {"subject": subject.pk, "category": AdverseEvent.Category.CTCAE})]
    if timeline_of(subject).day0 is not None:  # CRS and ICANS are toxicities of an infused product
        found += [NextAction("crs", "CRS event", "adverseevent",
                             {"subject": subject.pk, "category": AdverseEvent.Category.CRS,
                              "term": "Cytokine release syndrome"}),
                  NextAction("icans", "ICANS event", "adverseevent",
                             {"subject": subject.pk, "category": AdverseEvent.Category.ICANS,
                              "term": "Immune effector cell-associated neurotoxicity syndrome"})]
    open_events = [e for e in records_of(subject, "adverse_events") if e.resolved_on is None
                   and e.category in (AdverseEvent.Category.CRS, AdverseEvent.Category.ICANS)]
    for event in sorted(open_events, key=lambda e: (e.onset_on, e.pk)):
        name = "CRS" if event.category == AdverseEvent.Category.CRS else "ICANS"
        found.append(NextAction(f"{event.category}-assessment", f"{name} assessment (onset {event.onset_on:%d %b %Y})",
                                "adverseevent", object_id=event.pk))
    return found


def due_visits(subject: Subject, today: dt.date) -> list[tuple[Visit, int]]:
    """The protocol visits whose window holds ``today`` in the course ``today`` follows, with that course."""
    timeline = timeline_of(subject)
    number = timeline.course_of(today)
    day0 = timeline.day0_of(number) if number else None
    if day0 is None:
        return []
    assert number is not None  # day0 is known only for a course ``today`` follows
    return [(v, number) for v in visit_schedule(subject.trial_id) if VisitWindow.of(v).dates(day0).holds(today)]


def _response(subject: Subject, today: dt.date, known: _Known) -> list[NextAction]:
    found = []
    timeline = timeline_of(subject)
    answered = {(r.visit_id, timeline.course_of(r.assessed_on)) for r in records_of(subject, "responses", "visit")
                if r.visit_id is not None}
    for visit, number in due_visits(subject, today):
        if (visit.pk, number) in answered:
            continue
        def respond(visit: Visit = visit) -> None:
            outcome.check_response(subject=subject, assessed_on=today, category=ResponseAssessment.Category.NR,
                                   visit=visit, values={})

        if allows(respond):
            found.append(NextAction(f"response-{visit.code}", f"Response at {visit.code}", "responseassessment",
                                    {"subject": subject.pk, "visit": visit.pk}))
    return found


def _follow_up(subject: Subject, today: dt.date, known: _Known) -> list[NextAction]:
    if allows(lambda: outcome.check_follow_up(subject=subject, kind=FollowUp.Kind.LAST_CONTACT, event_on=today,
                                              cause_of_death="")):
        return [NextAction("follow-up", "Follow-up", "followup", {"subject": subject.pk})]
    return []
