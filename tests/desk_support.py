"""Subjects for the desk tests, built through the services on dates counted back from a chosen day 0 (the
shared factories enrol 20 days ago, too late for a day-28 visit that is due today)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from patients.models import Subject
from patients.services import enrolment, measurements, treatment
from tests.factories import SUBJECT_DEFAULTS, all_met, at


def day(day0: dt.date, n: int) -> dt.date:
    return day0 + dt.timedelta(days=n)


def enrolled_before(world: Any, day0: dt.date, *, site: Any = None) -> Subject:
    """Screened 60 days before ``day0``, consented, confirmed eligible, enrolled and measured 57 days before."""
    site = site or world.site_a
    coordinator = world.coordinator if site == world.site_a else world.coordinator_b
    investigator = world.investigator if site == world.site_a else world.investigator_b
    subject = enrolment.screen_subject(trial=world.trial, site=site, screened_on=day(day0, -60), by=coordinator,
                                       **SUBJECT_DEFAULTS)
    enrolment.record_consent(subject=subject, version="v1.0", consented_on=day(day0, -59), age_at_consent=30,
                             by=coordinator)
    assessment = enrolment.assess_eligibility(subject=subject, assessed_on=day(day0, -58),
                                              answers=all_met(world.trial), by=coordinator)
    enrolment.confirm_eligibility(assessment=assessment, by=investigator)
    subject.refresh_from_db()
    subject = enrolment.enrol_subject(subject=subject, cohort=world.trial.cohorts.get(code="ADULT"),
                                      enrolled_on=day(day0, -57), by=coordinator)
    measurements.record_body_measurement(subject=subject, measured_on=day(day0, -57), height_cm=Decimal("170"),
                                         weight_kg=Decimal("70"), by=coordinator)
    subject.refresh_from_db()
    return subject


def infused_on(world: Any, day0: dt.date, *, site: Any = None) -> Subject:
    """Collected, lot released, Flu/Cy on days -5..-3 and infused on ``day0``, through the services."""
    subject = enrolled_before(world, day0, site=site)
    by = world.coordinator if subject.site_id == world.site_a.pk else world.coordinator_b
    collection = treatment.record_collection(subject=subject, collection_id=f"AP-{subject.code}",
                                             collected_on=day(day0, -50), by=by)
    lot = treatment.register_lot(subject=subject, product=world.trial.products.get(), lot_number=f"LOT-{subject.code}",
                                 source="autologous", collection=collection, by=by)
    treatment.release_lot(lot=lot, release_date=day(day0, -40), viability_pct=Decimal("92"),
                          car_positive_pct=Decimal("41"), total_viable_car_cells=Decimal("2.1e8"), qc_pass=True, by=by)
    course = treatment.start_lymphodepletion(subject=subject, regimen=world.trial.regimens.get(),
                                             planned_infusion_on=day0, by=by)
    treatment.record_lymphodepletion_doses(course=course, by=by, doses=[
        treatment.DoseInput(agent=p.agent, given_on=p.planned_on, administered_mg=p.planned_mg)
        for p in treatment.course_plan(course)])
    subject.refresh_from_db()
    treatment.record_infusion(subject=subject, lot=lot, dose_level=world.trial.dose_levels.get(),
                              cells_per_kg=Decimal(1_000_000), infused_at=at(day0), by=by)
    subject.refresh_from_db()
    return subject
