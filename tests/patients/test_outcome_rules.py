"""Every rule of response assessments and follow-up, through the services.

A refused write raises the rule's DomainError (code and field) and writes nothing: ``refused`` compares
the row counts of the outcome tables and the subjects' status before and after.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest

from config.errors import DomainError
from patients.models import FollowUp, OffStudyReason, ResponseAssessment, Subject, SubjectStatus, SubjectTransition
from patients.services import enrolment, outcome
from tests.factories import TODAY, build_trial, consented, days_ago, infused_subject, lymphodepleted_subject
from trials.models import Visit

pytestmark = pytest.mark.django_db

S = SubjectStatus
TRACKED = (Subject, SubjectTransition, ResponseAssessment, FollowUp)
UNSET = object()
IN_TWO_DAYS = TODAY + dt.timedelta(days=2)



# --- helpers ---------------------------------------------------------------------------------------


def _snapshot() -> dict[str, Any]:
    state: dict[str, Any] = {model.__name__: model.objects.count() for model in TRACKED}
    state["subjects"] = list(Subject.objects.order_by("pk").values_list("pk", "status", "off_study_reason",
                                                                        "off_study_on"))
    return state


@contextmanager
def refused(code: str, field: Any = UNSET) -> Iterator[Any]:
    """The block raises ``code`` (on ``field``) and leaves every outcome table as it was."""
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


def infused(world: Any, day0: dt.date | None = None) -> Subject:
    return infused_subject(**people(world), day0=day0 or days_ago(5))


def respond(subject: Subject, by: Any, category: str, on: dt.date | None = None, **values: Any) -> ResponseAssessment:
    return outcome.record_response(subject=subject, assessed_on=on or days_ago(2), category=category, by=by,
                                   **values)


def status_of(subject: Subject) -> tuple[str, str, dt.date | None]:
    subject.refresh_from_db()
    return subject.status, subject.off_study_reason, subject.off_study_on


# --- responses -------------------------------------------------------------------------------------


def test_response_before_any_infusion_refused(world):
    subject = lymphodepleted_subject(**people(world))
    with refused("not_infused"):
        respond(subject, world.coordinator, "nr")


def test_response_dated_before_day_zero_refused(world):
    subject = infused(world)  # day 0 five days ago
    with refused("not_infused"):
        respond(subject, world.coordinator, "nr", on=days_ago(6))


def test_response_on_day_zero_accepted(world):
    subject = infused(world)
    assert respond(subject, world.coordinator, "nr", on=days_ago(5)).assessed_on == days_ago(5)


def test_response_in_future_refused(world):
    subject = infused(world)
    with refused("date_in_future", "assessed_on"):
        respond(subject, world.coordinator, "nr", on=IN_TWO_DAYS)


def test_response_after_consent_withdrawn_refused(world):
    subject = infused(world)
    enrolment.withdraw_consent(subject=subject, withdrawn_on=days_ago(3), reason="Moved away",
                               by=world.coordinator)
    with refused("consent_withdrawn"):
        respond(subject, world.coordinator, "nr")


def test_response_refused_for_a_monitor(world):
    subject = infused(world)
    with refused("not_permitted"):
        respond(subject, world.monitor, "nr")


@pytest.mark.parametrize(("study_day", "ok"), [(6, True), (7, True), (8, True), (5, False), (9, False)])
def test_response_visit_window(world, study_day, ok):
    visit = Visit.objects.create(trial=world.trial, code="D7", name="Day 7", target_day=7, window_before_days=1,
                                 window_after_days=1)
    day0 = days_ago(14)
    subject = infused(world, day0=day0)
    on = day0 + dt.timedelta(days=study_day)
    if ok:
        assert respond(subject, world.coordinator, "nr", on=on, visit=visit).visit == visit
    else:
        with refused("outside_visit_window", "assessed_on"):
            respond(subject, world.coordinator, "nr", on=on, visit=visit)


def test_response_visit_of_another_trial_refused(world):
    visit = Visit.objects.create(trial=build_trial(), code="D7", name="Day 7", target_day=7, window_before_days=7,
                                 window_after_days=7)
    subject = infused(world, day0=days_ago(10))
    with refused("visit_not_in_trial", "visit"):
        respond(subject, world.coordinator, "nr", on=days_ago(3), visit=visit)


@pytest.mark.parametrize("category", ["cr_mrd_neg", "cri_mrd_neg"])
@pytest.mark.parametrize(("mrd", "ok"), [("0.009", True), ("0.01", False), ("0.5", False), (None, False)])
def test_mrd_negative_needs_mrd_below_trial_threshold(world, category, mrd, ok):
    assert world.trial.mrd_negative_below_pct == Decimal("0.01")
    subject = infused(world)
    values = {"marrow_blasts_pct": Decimal("0.5"), "mrd_flow_pct": None if mrd is None else Decimal(mrd)}
    if ok:
        assert respond(subject, world.coordinator, category, **values).category == category
    else:
        with refused("mrd_not_negative", "mrd_flow_pct"):
            respond(subject, world.coordinator, category, **values)


def test_mrd_threshold_is_a_trial_setting(world):
    world.trial.mrd_negative_below_pct = Decimal("0.001")
    world.trial.save()
    subject = infused(world)
    with refused("mrd_not_negative", "mrd_flow_pct"):
        respond(subject, world.coordinator, "cr_mrd_neg", mrd_flow_pct=Decimal("0.005"))


@pytest.mark.parametrize("category", ["cr", "cri", "cr_mrd_neg", "cri_mrd_neg"])
def test_remission_with_marrow_blasts_5_or_more_refused(world, category):
    subject = infused(world)
    with refused("remission_with_blasts", "marrow_blasts_pct"):
        respond(subject, world.coordinator, category, marrow_blasts_pct=Decimal("5"), mrd_flow_pct=Decimal("0"))


def test_cr_with_blasts_just_below_5_accepted(world):
    subject = infused(world)
    assert respond(subject, world.coordinator, "cr", marrow_blasts_pct=Decimal("4.99")).category == "cr"


def test_relapse_without_antigen_status_refused(world):
    subject = infused(world)
    respond(subject, world.coordinator, "cr", on=days_ago(3), marrow_blasts_pct=Decimal("1"))
    with refused("antigen_status_required", "antigen_status"):
        respond(subject, world.coordinator, "relapse", on=days_ago(1), marrow_blasts_pct=Decimal("20"))


def test_relapse_without_prior_remission_refused(world):
    subject = infused(world)
    respond(subject, world.coordinator, "pr", on=days_ago(3), marrow_blasts_pct=Decimal("8"))
    with refused("relapse_without_remission", "category"):
        respond(subject, world.coordinator, "relapse", on=days_ago(1), marrow_blasts_pct=Decimal("20"),
                antigen_status="positive")


def test_relapse_on_same_day_as_remission_refused(world):
    subject = infused(world)
    respond(subject, world.coordinator, "cr", on=days_ago(2), marrow_blasts_pct=Decimal("1"))
    with refused("relapse_without_remission", "category"):
        respond(subject, world.coordinator, "relapse", on=days_ago(2), antigen_status="negative")


def test_cd19_negative_relapse_after_cr_accepted(world):
    subject = infused(world)
    respond(subject, world.coordinator, "cr", on=days_ago(3), marrow_blasts_pct=Decimal("1"))
    relapse = respond(subject, world.coordinator, "relapse", on=days_ago(1), marrow_blasts_pct=Decimal("20"),
                      antigen_status="negative")
    relapse.refresh_from_db()
    assert (relapse.category, relapse.antigen_status) == ("relapse", "negative")
    assert list(subject.responses.values_list("category", flat=True)) == ["cr", "relapse"]


def test_antigen_status_outside_relapse_refused(world):
    subject = infused(world)
    with refused("antigen_status_for_relapse", "antigen_status"):
        respond(subject, world.coordinator, "pd", antigen_status="negative")


# --- follow-up -------------------------------------------------------------------------------------


def follow(subject: Subject, by: Any, kind: str, on: dt.date | None = None, **kwargs: Any) -> FollowUp:
    return outcome.record_follow_up(subject=subject, kind=kind, event_on=on or days_ago(1), by=by, **kwargs)


def test_death_without_cause_refused(world):
    subject = infused(world)
    with refused("cause_required", "cause_of_death"):
        follow(subject, world.coordinator, "death", cause_of_death="  ")
    assert status_of(subject)[0] == S.FOLLOW_UP


def test_death_takes_subject_off_study(world):
    subject = infused(world)
    follow(subject, world.coordinator, "death", on=days_ago(2), cause_of_death="Progressive disease")
    assert status_of(subject) == (S.OFF_STUDY, OffStudyReason.DEATH, days_ago(2))
    assert subject.off_study_detail == "Progressive disease"


def test_lost_to_follow_up_takes_subject_off_study(world):
    subject = infused(world)
    follow(subject, world.coordinator, "lost", on=days_ago(2), detail="No answer to three letters")
    assert status_of(subject) == (S.OFF_STUDY, OffStudyReason.LOST_TO_FOLLOW_UP, days_ago(2))


def test_second_death_refused(world):
    subject = infused(world)
    follow(subject, world.coordinator, "death", on=days_ago(2), cause_of_death="Sepsis")
    with refused("subject_dead"):
        follow(subject, world.coordinator, "death", on=days_ago(1), cause_of_death="Sepsis")


def test_follow_up_other_than_death_refused_off_study(world):
    subject = infused(world)
    follow(subject, world.coordinator, "lost", on=days_ago(2), detail="Moved abroad")
    with refused("subject_closed"):
        follow(subject, world.coordinator, "last_contact", on=days_ago(1))


def test_death_after_lost_to_follow_up_recorded_and_subject_stays_off_study(world):
    subject = infused(world)
    follow(subject, world.coordinator, "lost", on=days_ago(3), detail="Moved abroad")
    follow(subject, world.coordinator, "death", on=days_ago(1), cause_of_death="Relapse")
    assert status_of(subject)[0] == S.OFF_STUDY
    assert subject.follow_ups.filter(kind="death").count() == 1


def test_survival_follow_up_after_consent_withdrawal_accepted(world):
    subject = infused(world)
    enrolment.withdraw_consent(subject=subject, withdrawn_on=days_ago(3), reason="Moved away",
                               by=world.coordinator)
    follow(subject, world.coordinator, "death", on=days_ago(1), cause_of_death="Relapse")
    assert status_of(subject) == (S.OFF_STUDY, OffStudyReason.CONSENT_WITHDRAWN, days_ago(3))


def test_follow_up_before_infusion_refused(world):
    subject = lymphodepleted_subject(**people(world))
    with refused("not_infused"):
        follow(subject, world.coordinator, "allo_hsct")


def test_death_before_infusion_takes_subject_off_study(world):
    subject = lymphodepleted_subject(**people(world))
    follow(subject, world.coordinator, "death", on=days_ago(1), cause_of_death="Sepsis during aplasia")
    assert status_of(subject) == (S.OFF_STUDY, OffStudyReason.DEATH, days_ago(1))


def test_follow_up_in_future_refused(world):
    subject = infused(world)
    with refused("date_in_future", "event_on"):
        follow(subject, world.coordinator, "last_contact", on=IN_TWO_DAYS)


def test_death_before_consent_refused(world):
    subject = consented(coordinator=world.coordinator, trial=world.trial, site=world.site_a)  # consented 29 days ago
    with refused("before_consent", "event_on"):
        follow(subject, world.coordinator, "death", on=days_ago(30), cause_of_death="Sepsis")


def test_follow_up_refused_for_a_monitor(world):
    subject = infused(world)
    with refused("not_permitted"):
        follow(subject, world.monitor, "last_contact")


# --- death without a known cause --------------------------------------------------------------------


def test_death_with_unknown_cause_takes_subject_off_study(world):
    subject = infused(world)
    death = follow(subject, world.coordinator, "death", on=days_ago(2), cause_of_death_unknown=True)
    assert (death.cause_of_death, death.cause_of_death_unknown) == ("", True)
    assert status_of(subject) == (S.OFF_STUDY, OffStudyReason.DEATH, days_ago(2))
    assert subject.off_study_detail == "Cause unknown"
    assert subject.transitions.order_by("-pk").first().reason == "Death. Cause unknown"


def test_unknown_cause_with_a_cause_text_refused(world):
    subject = infused(world)
    with refused("cause_given_and_unknown", "cause_of_death"):
        follow(subject, world.coordinator, "death", cause_of_death="Sepsis", cause_of_death_unknown=True)
    assert status_of(subject)[0] == S.FOLLOW_UP


def test_unknown_cause_for_a_living_subject_refused(world):
    subject = infused(world)
    with refused("cause_unknown_without_death", "cause_of_death_unknown"):
        follow(subject, world.coordinator, "last_contact", cause_of_death_unknown=True)


def test_unknown_cause_corrected_to_a_known_one(world):
    from patients.services import amendments

    subject = infused(world)
    death = follow(subject, world.coordinator, "death", cause_of_death_unknown=True)
    amendments.amend_record(record=death, changes={"cause_of_death": "Sepsis", "cause_of_death_unknown": False},
                            reason="Autopsy report received", by=world.coordinator)
    death.refresh_from_db()
    assert (death.cause_of_death, death.cause_of_death_unknown) == ("Sepsis", False)
    with pytest.raises(DomainError) as err:
        amendments.amend_record(record=death, changes={"cause_of_death": ""}, reason="Unsure",
                                by=world.coordinator)
    assert err.value.code == "cause_required"
