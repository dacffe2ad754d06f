"""Every rule of adverse events, CRS/ICANS assessments and concomitant medications, through the services.

A refused write raises the rule's DomainError (code and field) and writes nothing: ``refused`` compares
the row counts of the safety tables, every event's grade and outcome and the subjects' status.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest

from config.errors import DomainError
from patients import grading
from patients.models import (
    AdverseEvent,
    ConcomitantMedication,
    CrsAssessment,
    IcansAssessment,
    OffStudyReason,
    Subject,
    SubjectStatus,
    SubjectTransition,
)
from patients.services import enrolment, safety
from tests.factories import TODAY, at, consented, days_ago, infused_subject, screened

pytestmark = pytest.mark.django_db

S = SubjectStatus
TRACKED = (Subject, SubjectTransition, AdverseEvent, CrsAssessment, IcansAssessment, ConcomitantMedication)
UNSET = object()
IN_TWO_DAYS = TODAY + dt.timedelta(days=2)



# --- helpers ---------------------------------------------------------------------------------------


def _snapshot() -> dict[str, Any]:
    state: dict[str, Any] = {model.__name__: model.objects.count() for model in TRACKED}
    state["subjects"] = list(Subject.objects.order_by("pk").values_list("pk", "status", "off_study_reason",
                                                                        "off_study_on"))
    state["events"] = list(AdverseEvent.objects.order_by("pk").values_list("pk", "grade", "outcome", "death_on",
                                                                           "serious"))
    return state


@contextmanager
def refused(code: str, field: Any = UNSET) -> Iterator[Any]:
    """The block raises ``code`` (on ``field``) and leaves every safety table as it was."""
    before = _snapshot()
    with pytest.raises(DomainError) as err:
        yield err
    assert err.value.code == code, err.value.message
    if field is not UNSET:
        assert err.value.field == field
    assert _snapshot() == before


def infused(world: Any) -> Subject:
    """Infused five days ago (day 0), in follow-up."""
    return infused_subject(coordinator=world.coordinator, investigator=world.investigator, trial=world.trial,
                           site=world.site_a)


def child(world: Any, age: int) -> Subject:
    """A consented subject of ``age`` years (tests.factories.consented() always records 30)."""
    subject = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    enrolment.record_consent(subject=subject, version="v1.0", consented_on=days_ago(29), age_at_consent=age,
                             by=world.coordinator)
    subject.refresh_from_db()
    assert subject.age_at_consent == age
    return subject


def ctcae(**overrides: Any) -> safety.EventInput:
    values: dict[str, Any] = {"category": "ctcae", "term": "Febrile neutropenia", "onset_on": days_ago(3),
                              "related_to_product": "possible", "related_to_lymphodepletion": "probable",
                              "grade": 3}
    return safety.EventInput(**{**values, **overrides})


def fatal(**overrides: Any) -> safety.EventInput:
    return ctcae(**{"term": "Sepsis", "grade": 5, "outcome": "fatal", "death_on": days_ago(1), "serious": True,
                    "sae_death": True, "site_aware_at": at(days_ago(1)), **overrides})


def episode(subject: Subject, by: Any, category: str = "crs", onset_on: dt.date | None = None,
            **kwargs: Any) -> AdverseEvent:
    term = {"crs": "Cytokine release syndrome", "icans": "ICANS"}[category]
    return safety.record_adverse_event(subject=subject, by=by, data=safety.EventInput(
        category=category, term=term, onset_on=onset_on or days_ago(4), related_to_product="definite",
        related_to_lymphodepletion="unlikely", **kwargs))


def crs(event: AdverseEvent, by: Any, when: dt.datetime | None = None, **components: Any) -> CrsAssessment:
    return safety.record_crs_assessment(event=event, assessed_at=when or at(days_ago(3)), components=components,
                                        by=by)


def icans(event: AdverseEvent, by: Any, when: dt.datetime | None = None, **components: Any) -> IcansAssessment:
    return safety.record_icans_assessment(event=event, assessed_at=when or at(days_ago(3)), components=components,
                                          by=by)


def ice(score: int) -> dict[str, Any]:
    """ICE item answers adding up to ``score``: orientation (4), then objects (3), then the last three."""
    items: dict[str, Any] = dict.fromkeys(("orientation_year", "orientation_month", "orientation_city",
                                           "orientation_hospital", "follows_commands", "writes_sentence",
                                           "counts_backwards"), False)
    items["objects_named"] = 0
    order = ["orientation_year", "orientation_month", "orientation_city", "orientation_hospital", "objects_named",
             "objects_named", "objects_named", "follows_commands", "writes_sentence", "counts_backwards"]
    for name in order[:score]:
        items[name] = items[name] + 1 if name == "objects_named" else True
    return items


def grade_of(event: AdverseEvent) -> int | None:
    event.refresh_from_db()
    return event.grade


# --- adverse events --------------------------------------------------------------------------------


def test_ctcae_event_recorded(world):
    subject = infused(world)
    event = safety.record_adverse_event(subject=subject, by=world.coordinator, data=ctcae())
    event.refresh_from_db()
    assert (event.grade, event.grade_scale, event.report_due_at) == (3, "CTCAE v5.0", None)


def test_sae_without_criterion_refused(world):
    subject = infused(world)
    with refused("seriousness_criterion_required", "serious"):
        safety.record_adverse_event(subject=subject, by=world.coordinator,
                                    data=ctcae(serious=True, site_aware_at=at(days_ago(2))))


@pytest.mark.parametrize("criterion", safety.SAE_CRITERIA)
def test_criteria_without_serious_refused(world, criterion):
    subject = infused(world)
    with refused("criteria_without_sae", "serious"):
        safety.record_adverse_event(subject=subject, by=world.coordinator, data=ctcae(**{criterion: True}))


def test_sae_without_awareness_time_refused(world):
    subject = infused(world)
    with refused("awareness_time_required", "site_aware_at"):
        safety.record_adverse_event(subject=subject, by=world.coordinator,
                                    data=ctcae(serious=True, sae_hospitalisation=True))


@pytest.mark.parametrize("hours", [24, 72])
def test_sae_report_due_after_trial_hours(world, hours):
    world.trial.sae_report_hours = hours
    world.trial.save()
    subject = infused(world)
    aware = dt.datetime(days_ago(2).year, days_ago(2).month, days_ago(2).day, 7, 30, tzinfo=dt.UTC)
    event = safety.record_adverse_event(subject=subject, by=world.coordinator,
                                        data=ctcae(serious=True, sae_hospitalisation=True, site_aware_at=aware))
    event.refresh_from_db()
    assert event.report_due_at == aware + dt.timedelta(hours=hours)


def test_resolution_before_onset_refused(world):
    subject = infused(world)
    with refused("resolved_before_onset", "resolved_on"):
        safety.record_adverse_event(subject=subject, by=world.coordinator, data=ctcae(resolved_on=days_ago(4)))


def test_ctcae_without_grade_refused(world):
    subject = infused(world)
    with refused("grade_required", "grade"):
        safety.record_adverse_event(subject=subject, by=world.coordinator, data=ctcae(grade=None))


@pytest.mark.parametrize("category", ["crs", "icans"])
def test_grade_given_for_crs_or_icans_refused(world, category):
    subject = infused(world)
    with refused("grade_is_derived", "grade"):
        safety.record_adverse_event(subject=subject, by=world.coordinator,
                                    data=ctcae(category=category, term="CRS", grade=2))


@pytest.mark.parametrize("field", ["onset_on", "resolved_on", "death_on"])
def test_future_dates_refused(world, field):
    subject = infused(world)
    data = fatal(**{field: IN_TWO_DAYS}) if field == "death_on" else ctcae(**{field: IN_TWO_DAYS})
    with refused("date_in_future", field):
        safety.record_adverse_event(subject=subject, by=world.coordinator, data=data)


def test_grade5_without_death_date_refused(world):
    subject = infused(world)
    with refused("death_date_required", "death_on"):
        safety.record_adverse_event(subject=subject, by=world.coordinator, data=fatal(death_on=None))
    assert Subject.objects.get(pk=subject.pk).status == S.FOLLOW_UP


def test_grade5_without_fatal_outcome_refused(world):
    subject = infused(world)
    with refused("grade5_needs_fatal_outcome", "outcome"):
        safety.record_adverse_event(subject=subject, by=world.coordinator, data=fatal(outcome="not_recovered"))


def test_fatal_outcome_with_lower_grade_refused(world):
    subject = infused(world)
    with refused("fatal_needs_grade5", "grade"):
        safety.record_adverse_event(subject=subject, by=world.coordinator, data=fatal(grade=4))


def test_grade5_not_serious_refused(world):
    subject = infused(world)
    with refused("death_is_serious", "serious"):
        safety.record_adverse_event(subject=subject, by=world.coordinator,
                                    data=fatal(serious=False, sae_death=False, site_aware_at=None))


def test_death_before_onset_refused(world):
    subject = infused(world)
    with refused("death_before_onset", "death_on"):
        safety.record_adverse_event(subject=subject, by=world.coordinator, data=fatal(death_on=days_ago(4)))


def test_grade5_ctcae_takes_subject_off_study_with_reason_death(world):
    subject = infused(world)
    event = safety.record_adverse_event(subject=subject, by=world.coordinator, data=fatal())
    subject.refresh_from_db()
    assert subject.status == S.OFF_STUDY and subject.off_study_reason == OffStudyReason.DEATH
    assert subject.off_study_on == event.death_on == days_ago(1)
    assert subject.transitions.filter(to_status=S.OFF_STUDY).count() == 1


def test_event_for_unconsented_subject_refused(world):
    subject = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    with refused("subject_not_ready"):
        safety.record_adverse_event(subject=subject, by=world.coordinator, data=ctcae())


def test_event_after_consent_withdrawn_refused(world):
    subject = consented(coordinator=world.coordinator, trial=world.trial, site=world.site_a)
    enrolment.withdraw_consent(subject=subject, withdrawn_on=days_ago(5), reason="Moved away",
                               by=world.coordinator)
    with refused("consent_withdrawn"):
        safety.record_adverse_event(subject=subject, by=world.coordinator, data=ctcae())


def test_event_refused_for_a_monitor(world):
    subject = infused(world)
    with refused("not_permitted"):
        safety.record_adverse_event(subject=subject, by=world.monitor, data=ctcae())


# --- CRS -------------------------------------------------------------------------------------------


CRS_CASES = [
    pytest.param({"max_temp_c": Decimal("39.5"), "hypotension": True, "vasopressors": ["norepinephrine"],
                  "o2_device": "low_flow_nc", "o2_flow_lpm": Decimal("2")}, 3, id="astct-example-39.5-1pressor-nc2"),
    pytest.param({"max_temp_c": Decimal("38.0")}, 1, id="38.0-alone"),
    pytest.param({"max_temp_c": Decimal("37.9")}, 0, id="37.9-alone"),
    pytest.param({"max_temp_c": Decimal("38.5"), "hypotension": True}, 2, id="hypotension-fluids"),
    pytest.param({"max_temp_c": Decimal("38.5"), "hypotension": True,
                  "vasopressors": ["norepinephrine", "vasopressin"]}, 3, id="1pressor-plus-vasopressin"),
    pytest.param({"max_temp_c": Decimal("38.5"), "hypotension": True,
                  "vasopressors": ["norepinephrine", "epinephrine"]}, 4, id="2pressors"),
    pytest.param({"max_temp_c": Decimal("38.5"), "o2_device": "low_flow_nc", "o2_flow_lpm": Decimal("8")}, 3,
                 id="nc-8lpm"),
    pytest.param({"max_temp_c": Decimal("38.5"), "o2_device": "blow_by"}, 2, id="blow-by"),
    pytest.param({"max_temp_c": Decimal("38.5"), "o2_device": "bipap"}, 4, id="bipap"),
    pytest.param({"max_temp_c": Decimal("39"), "fever_other_cause": True, "hypotension": True}, 0,
                 id="fever-other-cause"),
    pytest.param({"max_temp_c": Decimal("39"), "hypotension": True, "hypotension_other_cause": True}, 1,
                 id="hypotension-other-cause"),
]


@pytest.mark.parametrize(("components", "expected"), CRS_CASES)
def test_crs_grade_derived_through_service(world, components, expected):
    subject = infused(world)
    event = episode(subject, world.coordinator)
    assessment = crs(event, world.coordinator, **components)
    assessment.refresh_from_db()
    assert assessment.derived_grade == expected and assessment.grade == expected
    assert assessment.algorithm == grading.ALGORITHM_CRS
    assert grade_of(event) == expected


def test_crs_event_grade_is_max_of_assessments(world):
    subject = infused(world)
    event = episode(subject, world.coordinator)
    assert grade_of(event) == 0
    crs(event, world.coordinator, at(days_ago(4), 8), max_temp_c=Decimal("38.4"))
    assert grade_of(event) == 1
    crs(event, world.coordinator, at(days_ago(3), 8), max_temp_c=Decimal("39.5"), hypotension=True,
        vasopressors=["norepinephrine"])
    assert grade_of(event) == 3
    crs(event, world.coordinator, at(days_ago(2), 8), max_temp_c=Decimal("38.2"), hypotension=True)
    assert grade_of(event) == 3


def test_crs_override_needs_reason(world):
    subject = infused(world)
    event = episode(subject, world.coordinator)
    with refused("override_needs_reason", "override_reason"):
        safety.record_crs_assessment(event=event, assessed_at=at(days_ago(3)), by=world.investigator,
                                     components={"max_temp_c": Decimal("38.5")}, override_grade=2,
                                     override_reason="  ")


def test_crs_override_keeps_derived_grade(world):
    subject = infused(world)
    event = episode(subject, world.coordinator)
    assessment = safety.record_crs_assessment(
        event=event, assessed_at=at(days_ago(3)), by=world.investigator, components={"max_temp_c": Decimal("38.5")},
        override_grade=2, override_reason="Hypotension charted on the ward, not in the window")
    assessment.refresh_from_db()
    assert (assessment.derived_grade, assessment.override_grade, assessment.grade) == (1, 2, 2)
    assert grade_of(event) == 2


def test_tocilizumab_before_assessment_masks_fever(world):
    subject = infused(world)
    event = episode(subject, world.coordinator)
    safety.record_medication(subject=subject, drug="tocilizumab", dose=Decimal("8"), dose_unit="mg/kg", route="iv",
                             given_at=at(days_ago(3), 8), by=world.coordinator, adverse_event=event)
    assessment = crs(event, world.coordinator, at(days_ago(3), 10), max_temp_c=Decimal("37.0"), hypotension=True)
    assert assessment.derived_grade == 2
    assert assessment.prior_antipyretic_or_anticytokine is True
    assert grading.FLAG_FEVER_MASKED in assessment.flags
    assert grade_of(event) == 2


def test_tocilizumab_after_assessment_does_not_mask_fever(world):
    subject = infused(world)
    event = episode(subject, world.coordinator)
    safety.record_medication(subject=subject, drug="tocilizumab", dose=Decimal("8"), dose_unit="mg/kg", route="iv",
                             given_at=at(days_ago(3), 12), by=world.coordinator, adverse_event=event)
    assessment = crs(event, world.coordinator, at(days_ago(3), 10), max_temp_c=Decimal("37.0"), hypotension=True)
    assert assessment.derived_grade == 0
    assert assessment.prior_antipyretic_or_anticytokine is False
    assert grade_of(event) == 0


def test_non_masking_medication_does_not_mask_fever(world):
    subject = infused(world)
    event = episode(subject, world.coordinator)
    safety.record_medication(subject=subject, drug="levetiracetam", dose=Decimal("500"), dose_unit="mg",
                             route="oral", given_at=at(days_ago(3), 8), by=world.coordinator)
    assert crs(event, world.coordinator, at(days_ago(3), 10), max_temp_c=Decimal("37.0"),
               hypotension=True).derived_grade == 0


def test_crs_assessment_before_onset_refused(world):
    subject = infused(world)
    event = episode(subject, world.coordinator, onset_on=days_ago(3))
    with refused("assessment_before_onset", "assessed_at"):
        crs(event, world.coordinator, at(days_ago(4)), max_temp_c=Decimal("39"))


def test_crs_assessment_after_resolution_refused(world):
    subject = infused(world)
    event = episode(subject, world.coordinator, onset_on=days_ago(4), resolved_on=days_ago(3))
    with refused("assessment_after_resolution", "assessed_at"):
        crs(event, world.coordinator, at(days_ago(2)), max_temp_c=Decimal("39"))


def test_crs_assessment_in_future_refused(world):
    subject = infused(world)
    event = episode(subject, world.coordinator)
    with refused("date_in_future", "assessed_at"):
        crs(event, world.coordinator, at(IN_TWO_DAYS), max_temp_c=Decimal("39"))


def test_crs_assessment_on_icans_event_refused(world):
    subject = infused(world)
    event = episode(subject, world.coordinator, category="icans")
    with refused("wrong_event_category", "event"):
        crs(event, world.coordinator, max_temp_c=Decimal("39"))


def test_icans_assessment_on_crs_event_refused(world):
    subject = infused(world)
    event = episode(subject, world.coordinator, category="crs")
    with refused("wrong_event_category", "event"):
        icans(event, world.coordinator, **ice(5))


def test_icans_assessment_on_ctcae_event_refused(world):
    subject = infused(world)
    event = safety.record_adverse_event(subject=subject, by=world.coordinator, data=ctcae())
    with refused("wrong_event_category", "event"):
        icans(event, world.coordinator, **ice(5))


@pytest.mark.parametrize("components", [{"max_temp_c": Decimal("50")}, {"vasopressors": ["adrenaline"]},
                                        {"o2_device": "none", "o2_flow_lpm": Decimal("2")}])
def test_impossible_crs_components_refused(world, components):
    subject = infused(world)
    event = episode(subject, world.coordinator)
    with refused("invalid_components"):
        crs(event, world.coordinator, **components)


def test_crs_assessment_refused_for_a_monitor(world):
    subject = infused(world)
    event = episode(subject, world.coordinator)
    with refused("not_permitted"):
        crs(event, world.monitor, max_temp_c=Decimal("39"))


def test_death_due_to_crs_makes_grade5_and_takes_subject_off_study(world):
    subject = infused(world)
    event = episode(subject, world.coordinator)
    crs(event, world.coordinator, at(days_ago(3)), max_temp_c=Decimal("39.5"), hypotension=True,
        vasopressors=["norepinephrine", "epinephrine"])
    assessment = crs(event, world.coordinator, at(days_ago(2)), death_due_to_crs=True)
    assert assessment.derived_grade == 5
    event.refresh_from_db()
    assert (event.grade, event.outcome, event.death_on) == (5, "fatal", days_ago(2))
    assert event.serious and event.sae_death and event.report_due_at is not None
    subject.refresh_from_db()
    assert subject.status == S.OFF_STUDY and subject.off_study_reason == OffStudyReason.DEATH
    assert subject.off_study_on == days_ago(2)


# --- ICANS -----------------------------------------------------------------------------------------


ICANS_ADULT_CASES = [
    pytest.param({**ice(3), "seizure": "rapidly_resolving"}, 3, id="astct-example-ice3-generalised-seizure"),
    pytest.param(ice(8), 1, id="ice8"),
    pytest.param(ice(10), 0, id="ice10-alert"),
    pytest.param(ice(5), 2, id="ice5"),
    pytest.param(ice(2), 3, id="ice2"),
    pytest.param({**ice(0), "consciousness": "unarousable"}, 4, id="ice0-unarousable"),
    pytest.param({"ice_unable_awake_aphasic": True}, 3, id="ice0-awake-aphasic"),
    pytest.param({**ice(10), "seizure": "prolonged_or_repetitive"}, 4, id="status-epilepticus"),
    pytest.param({**ice(10), "motor": "deep_focal_weakness"}, 4, id="hemiparesis"),
    pytest.param({**ice(10), "cerebral_oedema": "focal"}, 3, id="focal-oedema"),
    pytest.param({**ice(10), "consciousness": "awakens_to_voice"}, 2, id="wakes-to-voice"),
    pytest.param({**ice(10), "consciousness": "tactile_only", "consciousness_other_cause": True}, 0,
                 id="sedated"),
]


@pytest.mark.parametrize(("components", "expected"), ICANS_ADULT_CASES)
def test_icans_grade_derived_for_adult(world, components, expected):
    subject = infused(world)  # 30 years old
    event = episode(subject, world.coordinator, category="icans")
    assessment = icans(event, world.coordinator, **components)
    assessment.refresh_from_db()
    assert assessment.derived_grade == expected
    assert grade_of(event) == expected


def test_icans_stores_ice_score(world):
    subject = infused(world)
    event = episode(subject, world.coordinator, category="icans")
    assessment = icans(event, world.coordinator, **ice(7))
    assessment.refresh_from_db()
    assert assessment.ice_score == 7 and assessment.derived_grade == 1


@pytest.mark.parametrize(("components", "expected"), [
    ({"capd_total": 10}, 3), ({"capd_total": 9}, 3), ({"capd_total": 5}, 1), ({"capd_total": 0}, 0),
    ({"capd_unable": True}, 4), ({"capd_total": 5, "consciousness": "awakens_to_voice"}, 2),
    ({**ice(10), "capd_total": 12}, 3),
])
def test_icans_capd_path_for_a_child(world, components, expected):
    young = child(world, age=world.trial.capd_age_cutoff_years - 4)
    event = episode(young, world.coordinator, category="icans")
    assessment = icans(event, world.coordinator, **components)
    assert assessment.derived_grade == expected
    assert grade_of(event) == expected


def test_icans_ice_path_at_the_capd_cutoff_age(world):
    subject = child(world, age=world.trial.capd_age_cutoff_years)
    event = episode(subject, world.coordinator, category="icans")
    assessment = icans(event, world.coordinator, **ice(10), capd_total=12)
    assert assessment.derived_grade == 0
    assert grading.FLAG_CAPD_IGNORED in assessment.flags


def test_icans_capd_cutoff_is_a_trial_setting(world):
    world.trial.capd_age_cutoff_years = 16
    world.trial.save()
    subject = child(world, age=14)
    event = episode(subject, world.coordinator, category="icans")
    assert icans(event, world.coordinator, **ice(10), capd_total=12).derived_grade == 3


def test_icans_override_needs_reason_and_keeps_derived(world):
    subject = infused(world)
    event = episode(subject, world.coordinator, category="icans")
    with refused("override_needs_reason", "override_reason"):
        safety.record_icans_assessment(event=event, assessed_at=at(days_ago(3)), components=ice(8),
                                       by=world.investigator, override_grade=2)
    assessment = safety.record_icans_assessment(event=event, assessed_at=at(days_ago(3)), components=ice(8),
                                                by=world.investigator, override_grade=2,
                                                override_reason="Dysphasia not captured by ICE")
    assessment.refresh_from_db()
    assert (assessment.derived_grade, assessment.grade) == (1, 2)
    assert grade_of(event) == 2


def test_icans_assessment_before_onset_refused(world):
    subject = infused(world)
    event = episode(subject, world.coordinator, category="icans", onset_on=days_ago(2))
    with refused("assessment_before_onset", "assessed_at"):
        icans(event, world.coordinator, at(days_ago(3)), **ice(5))


@pytest.mark.parametrize("components", [
    {"orientation_year": True}, {**ice(5), "objects_named": 4}, {"consciousness": "asleep"},
    {"ice_unable_awake_aphasic": True, "consciousness": "unarousable"}, {"capd_total": 40},
])
def test_impossible_icans_components_refused(world, components):
    subject = infused(world)
    event = episode(subject, world.coordinator, category="icans")
    with refused("invalid_components"):
        icans(event, world.coordinator, **components)


def test_death_due_to_icans_takes_subject_off_study(world):
    subject = infused(world)
    event = episode(subject, world.coordinator, category="icans")
    icans(event, world.coordinator, at(days_ago(2)), death_due_to_icans=True)
    event.refresh_from_db()
    assert (event.grade, event.outcome, event.death_on) == (5, "fatal", days_ago(2))
    subject.refresh_from_db()
    assert subject.status == S.OFF_STUDY and subject.off_study_reason == OffStudyReason.DEATH


# --- concomitant medications -----------------------------------------------------------------------


def test_medication_recorded(world):
    subject = infused(world)
    medication = safety.record_medication(subject=subject, drug="dexamethasone", dose=Decimal("10"),
                                          dose_unit="mg", route="iv", given_at=at(days_ago(2)),
                                          by=world.coordinator, indication="ICANS grade 2")
    assert medication.subject == subject


def test_other_medication_needs_a_name(world):
    subject = infused(world)
    with refused("drug_name_required", "drug_name"):
        safety.record_medication(subject=subject, drug="other", dose=Decimal("1"), dose_unit="g", route="iv",
                                 given_at=at(days_ago(2)), by=world.coordinator)


def test_medication_for_another_subjects_event_refused(world):
    subject = infused(world)
    other = infused(world)
    event = episode(other, world.coordinator)
    with refused("event_not_subjects", "adverse_event"):
        safety.record_medication(subject=subject, drug="tocilizumab", dose=Decimal("8"), dose_unit="mg/kg",
                                 route="iv", given_at=at(days_ago(2)), by=world.coordinator, adverse_event=event)


def test_medication_in_future_refused(world):
    subject = infused(world)
    with refused("date_in_future", "given_at"):
        safety.record_medication(subject=subject, drug="paracetamol", dose=Decimal("1"), dose_unit="g",
                                 route="oral", given_at=at(IN_TWO_DAYS), by=world.coordinator)


def test_medication_before_consent_refused(world):
    subject = infused(world)  # consented 29 days ago
    with refused("no_consent", "given_at"):
        safety.record_medication(subject=subject, drug="paracetamol", dose=Decimal("1"), dose_unit="g",
                                 route="oral", given_at=at(days_ago(30)), by=world.coordinator)


def test_medication_after_consent_withdrawn_refused(world):
    subject = infused(world)
    enrolment.withdraw_consent(subject=subject, withdrawn_on=days_ago(1), reason="Moved away",
                               by=world.coordinator)
    with refused("consent_withdrawn"):
        safety.record_medication(subject=subject, drug="paracetamol", dose=Decimal("1"), dose_unit="g",
                                 route="oral", given_at=at(days_ago(1)), by=world.coordinator)


def test_event_input_fields_are_event_fields():
    """EventInput is splatted into AdverseEvent: every field must exist on the model."""
    names = {f.name for f in AdverseEvent._meta.get_fields()}
    assert {f.name for f in dataclasses.fields(safety.EventInput)} <= names
