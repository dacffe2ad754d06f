"""Test data. Factories build valid inputs; states a service produces are built by calling the service."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import factory
from django.contrib.auth import get_user_model
from factory.django import DjangoModelFactory

from patients.models import EligibilityAssessment, Subject, SubjectStatus
from patients.services import enrolment
from trials.models import (
    Cohort,
    DoseLevel,
    EligibilityCriterion,
    LymphodepletionRegimen,
    Membership,
    Product,
    RegimenAgent,
    Site,
    Trial,
    TrialSite,
)

TODAY = dt.date.today()
PASSWORD = "correct-horse-battery"


def days_ago(n: int) -> dt.date:
    return TODAY - dt.timedelta(days=n)


class UserFactory(DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = "Test"
    last_name = factory.Sequence(lambda n: f"User{n}")
    is_staff = True
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def saved(obj, create: bool, extracted: Any, **kwargs: Any) -> None:  # noqa: N805
        if create:
            obj.save()


class TrialFactory(DjangoModelFactory):
    class Meta:
        model = Trial

    code = factory.Sequence(lambda n: f"T{n:03d}")
    title = "Test CD19 CAR-T trial"
    phase = Trial.Phase.PHASE_1_2
    status = Trial.Status.RECRUITING
    indication = "R/R B-ALL"


class SiteFactory(DjangoModelFactory):
    class Meta:
        model = Site

    code = factory.Sequence(lambda n: f"S{n:02d}")
    name = factory.Sequence(lambda n: f"Site {n}")
    country = "CN"
    time_zone = "Asia/Shanghai"


class TrialSiteFactory(DjangoModelFactory):
    class Meta:
        model = TrialSite

    trial = factory.SubFactory(TrialFactory)
    site = factory.SubFactory(SiteFactory)
    status = TrialSite.Status.ACTIVE
    activated_on = dt.date(2020, 1, 1)


class CohortFactory(DjangoModelFactory):
    class Meta:
        model = Cohort

    trial = factory.SubFactory(TrialFactory)
    code = factory.Sequence(lambda n: f"C{n}")
    name = "Cohort"


class CriterionFactory(DjangoModelFactory):
    class Meta:
        model = EligibilityCriterion

    trial = factory.SubFactory(TrialFactory)
    kind = EligibilityCriterion.Kind.INCLUSION
    number = factory.Sequence(lambda n: n + 1)
    text = "Relapsed CD19+ B-ALL"


class MembershipFactory(DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    trial = factory.SubFactory(TrialFactory)
    site = factory.SubFactory(SiteFactory)
    role = Membership.Role.COORDINATOR


def build_trial(**kwargs: Any) -> Trial:
    """A recruiting trial with its protocol: two cohorts, criteria, a dose level, an FC regimen, a product."""
    trial = TrialFactory(**kwargs)
    CohortFactory(trial=trial, code="PED", name="Paediatric")
    CohortFactory(trial=trial, code="ADULT", name="Adult")
    CriterionFactory(trial=trial, kind="inclusion", number=1, text="Relapsed CD19+ B-ALL")
    CriterionFactory(trial=trial, kind="inclusion", number=2, text="Marrow blasts >= 5%")
    CriterionFactory(trial=trial, kind="exclusion", number=1, text="Active CNS3 disease")
    DoseLevel.objects.create(trial=trial, code="DL1", cells_per_kg=Decimal(1_000_000), tolerance_pct=20)
    regimen = LymphodepletionRegimen.objects.create(trial=trial, code="FC", name="FC", dose_tolerance_pct=10)
    RegimenAgent.objects.create(regimen=regimen, agent="fludarabine", dose_mg_per_m2=30, days=[-5, -4, -3])
    RegimenAgent.objects.create(regimen=regimen, agent="cyclophosphamide", dose_mg_per_m2=250, days=[-5, -4, -3])
    Product.objects.create(trial=trial, code="HCART19", name="hCART19", target_antigens=["CD19"],
                           scfv_origin="humanized", costimulatory_domain="4-1BB", vector="lentiviral",
                           allowed_sources=["autologous"])
    return trial


def all_met(trial: Trial, **overrides: bool) -> dict[EligibilityCriterion, bool]:
    """Answers that make a subject eligible; ``overrides`` keyed 'I1', 'E1'... flip single answers."""
    answers = {}
    for c in EligibilityCriterion.objects.filter(trial=trial, active=True):
        key = f"{'I' if c.kind == 'inclusion' else 'E'}{c.number}"
        answers[c] = overrides.get(key, c.kind == EligibilityCriterion.Kind.INCLUSION)
    return answers


SUBJECT_DEFAULTS = {"sex": Subject.Sex.FEMALE, "diagnosis": "b_all", "marrow_blasts_pct": Decimal("35")}


def screened(*, trial: Trial, site: Site, coordinator: Any, on: dt.date | None = None, **chars: Any) -> Subject:
    return enrolment.screen_subject(trial=trial, site=site, screened_on=on or days_ago(30), by=coordinator,
                                    **{**SUBJECT_DEFAULTS, **chars})


def consented(*, coordinator: Any, on: dt.date | None = None, **kwargs: Any) -> Subject:
    subject = screened(coordinator=coordinator, **kwargs)
    enrolment.record_consent(subject=subject, version="v1.0", consented_on=on or days_ago(29), age_at_consent=30,
                             by=coordinator)
    return subject


def assessed(*, coordinator: Any, eligible: bool = True, **kwargs: Any) -> tuple[Subject, EligibilityAssessment]:
    subject = consented(coordinator=coordinator, **kwargs)
    answers = all_met(subject.trial) if eligible else all_met(subject.trial, E1=True)
    assessment = enrolment.assess_eligibility(subject=subject, assessed_on=days_ago(25), answers=answers,
                                              by=coordinator)
    return subject, assessment


def eligible_subject(*, coordinator: Any, investigator: Any, **kwargs: Any) -> Subject:
    subject, assessment = assessed(coordinator=coordinator, **kwargs)
    enrolment.confirm_eligibility(assessment=assessment, by=investigator)
    subject.refresh_from_db()
    assert subject.status == SubjectStatus.ELIGIBLE
    return subject


def enrolled_subject(*, coordinator: Any, investigator: Any, **kwargs: Any) -> Subject:
    subject = eligible_subject(coordinator=coordinator, investigator=investigator, **kwargs)
    return enrolment.enrol_subject(subject=subject, cohort=subject.trial.cohorts.get(code="ADULT"),
                                   enrolled_on=days_ago(20), by=coordinator)


# --- treatment (issue: treatment and safety) ----------------------------------------------------


def at(day: dt.date, hour: int = 10) -> dt.datetime:
    """An aware datetime at ``hour`` o'clock UTC on ``day``."""
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)


def apheresed_subject(*, coordinator: Any, investigator: Any, **kwargs: Any) -> Subject:
    from patients.services import measurements, treatment

    subject = enrolled_subject(coordinator=coordinator, investigator=investigator, **kwargs)
    measurements.record_body_measurement(subject=subject, measured_on=days_ago(20), height_cm=Decimal("170"),
                                         weight_kg=Decimal("70"), by=coordinator)
    treatment.record_collection(subject=subject, collection_id=f"AP-{subject.code}", collected_on=days_ago(19),
                                by=coordinator)
    subject.refresh_from_db()
    return subject


def released_lot(*, subject: Subject, coordinator: Any) -> Any:
    from patients.services import treatment

    lot = treatment.register_lot(subject=subject, product=subject.trial.products.get(),
                                 lot_number=f"LOT-{subject.code}", source="autologous",
                                 collection=subject.collections.get(), by=coordinator)
    return treatment.release_lot(lot=lot, release_date=days_ago(18), viability_pct=Decimal("92"),
                                 car_positive_pct=Decimal("41"), total_viable_car_cells=Decimal("2.1e8"),
                                 qc_pass=True, by=coordinator)


def lymphodepleted_subject(*, coordinator: Any, investigator: Any, day0: dt.date | None = None,
                           **kwargs: Any) -> Subject:
    """Apheresed, lot released, Flu/Cy given on days -5..-3 of ``day0`` (default: 5 days ago)."""
    from patients.services import treatment

    day0 = day0 or days_ago(5)
    subject = apheresed_subject(coordinator=coordinator, investigator=investigator, **kwargs)
    released_lot(subject=subject, coordinator=coordinator)
    regimen = subject.trial.regimens.get()
    course = treatment.start_lymphodepletion(subject=subject, regimen=regimen, planned_infusion_on=day0,
                                             by=coordinator)
    for agent in regimen.agents.all():
        for day in agent.days:
            treatment.record_lymphodepletion_dose(
                course=course, agent=agent, given_on=day0 + dt.timedelta(days=day),
                administered_mg=(course.bsa_m2 * agent.dose_mg_per_m2).quantize(Decimal("0.1")), by=coordinator)
    subject.refresh_from_db()
    return subject


def infused_subject(*, coordinator: Any, investigator: Any, day0: dt.date | None = None, **kwargs: Any) -> Subject:
    from patients.services import treatment

    day0 = day0 or days_ago(5)
    subject = lymphodepleted_subject(coordinator=coordinator, investigator=investigator, day0=day0, **kwargs)
    treatment.record_infusion(subject=subject, lot=subject.lots.get(), dose_level=subject.trial.dose_levels.get(),
                              cells_per_kg=Decimal(1_000_000), infused_at=at(day0), by=coordinator)
    subject.refresh_from_db()
    return subject


def reinfusable_subject(*, coordinator: Any, investigator: Any, day0: dt.date, lot_released_on: dt.date,
                        **kwargs: Any) -> Subject:
    """Infused on ``day0`` in a trial that allows re-infusion, with a second lot released for it."""
    from patients.services import treatment

    subject = infused_subject(coordinator=coordinator, investigator=investigator, day0=day0, **kwargs)
    subject.trial.reinfusion_allowed = True
    subject.trial.save()
    lot = treatment.register_lot(subject=subject, product=subject.trial.products.get(), lot_number="LOT-R2",
                                 source="autologous", collection=subject.collections.get(), by=coordinator)
    treatment.release_lot(lot=lot, release_date=lot_released_on, viability_pct=Decimal("90"),
                          car_positive_pct=Decimal("40"), total_viable_car_cells=Decimal("1.5e8"), qc_pass=True,
                          by=coordinator)
    return subject


def reinfuse(subject: Subject, *, by: Any, day0: dt.date) -> None:
    """A second lymphodepletion course at the planned doses and the second lot infused on ``day0``."""
    from patients.services import treatment

    course = treatment.start_lymphodepletion(subject=subject, regimen=subject.trial.regimens.get(),
                                             planned_infusion_on=day0, by=by)
    treatment.record_lymphodepletion_doses(course=course, by=by, doses=[
        treatment.DoseInput(agent=p.agent, given_on=p.planned_on, administered_mg=p.planned_mg)
        for p in treatment.course_plan(course)])
    treatment.record_infusion(subject=subject, lot=subject.lots.get(lot_number="LOT-R2"),
                              dose_level=subject.trial.dose_levels.get(), cells_per_kg=Decimal(1_000_000),
                              infused_at=at(day0), by=by)
