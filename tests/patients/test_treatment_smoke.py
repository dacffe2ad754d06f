import datetime as dt
from decimal import Decimal

import pytest

from patients.models import SubjectStatus
from patients.services import outcome, safety
from tests.factories import at, days_ago, infused_subject

pytestmark = pytest.mark.django_db


def test_full_course_through_services(world):
    subject = infused_subject(coordinator=world.coordinator, investigator=world.investigator,
                              trial=world.trial, site=world.site_a)
    assert subject.status == SubjectStatus.FOLLOW_UP
    course = subject.ld_courses.get()
    assert course.bsa_m2 == Decimal("1.818")
    assert [d.planned_mg for d in course.doses.filter(agent__agent="fludarabine")] == [Decimal("54.5")] * 3
    infusion = subject.infusions.get()
    assert infusion.total_cells == Decimal(70_000_000)
    crs = safety.record_adverse_event(subject=subject, by=world.coordinator, data=safety.EventInput(
        category="crs", term="Cytokine release syndrome", onset_on=days_ago(4), related_to_product="definite",
        related_to_lymphodepletion="unlikely"))
    safety.record_crs_assessment(event=crs, assessed_at=at(days_ago(4)), by=world.coordinator,
                                 components={"max_temp_c": Decimal("39.5"), "hypotension": True,
                                             "vasopressors": ["norepinephrine"], "o2_device": "low_flow_nc",
                                             "o2_flow_lpm": Decimal("2")})
    crs.refresh_from_db()
    assert crs.grade == 3
    outcome.record_response(subject=subject, assessed_on=days_ago(2), category="cr_mrd_neg", by=world.coordinator,
                            marrow_blasts_pct=Decimal("0.5"), mrd_flow_pct=Decimal("0.001"))
    outcome.record_follow_up(subject=subject, kind="death", event_on=days_ago(1), cause_of_death="Sepsis",
                             by=world.coordinator)
    subject.refresh_from_db()
    assert subject.status == SubjectStatus.OFF_STUDY and subject.off_study_reason == "death"
    assert dt.date.today() > subject.off_study_on
