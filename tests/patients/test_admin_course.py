"""The subject's course in the admin (patients/admin_course.py).

Refusals through the admin add forms and inlines show the service's message on the field it concerns and
save nothing; a valid infusion moves the subject on; the subject page lists the course in order with study
days, in a number of queries that does not grow with the course; site-B staff never see site-A records.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from patients.models import (
    AdverseEvent,
    ConcomitantMedication,
    CrsAssessment,
    FollowUp,
    Infusion,
    LymphodepletionDose,
    ProductLot,
    ResponseAssessment,
    Subject,
    SubjectStatus,
)
from patients.services import outcome, safety, treatment
from tests.admin_forms import change_form_data, form_values
from tests.factories import (
    apheresed_subject,
    at,
    days_ago,
    infused_subject,
    lymphodepleted_subject,
    released_lot,
)

pytestmark = pytest.mark.django_db

CRS_COMPONENTS = {"max_temp_c": Decimal("39.5"), "hypotension": True, "vasopressors": ["norepinephrine"],
                  "o2_device": "low_flow_nc", "o2_flow_lpm": Decimal("2")}


# --- helpers -------------------------------------------------------------------------------------


def site_a(world: Any, make: Any = infused_subject, **kwargs: Any) -> Subject:
    return make(coordinator=world.coordinator, investigator=world.investigator, trial=world.trial,
                site=world.site_a, **kwargs)


def add_url(model: str) -> str:
    return reverse(f"admin:patients_{model}_add")


def change_url(obj: Any) -> str:
    return reverse(f"admin:patients_{obj._meta.model_name}_change", args=[obj.pk])


def add_form_data(client: Any, model: str, **values: Any) -> dict[str, Any]:
    """The add form's defaults as rendered, with ``values`` applied."""
    response = client.get(add_url(model))
    assert response.status_code == 200
    data = form_values(response.context["adminform"].form)
    data.update({k: v for k, v in values.items() if v is not None})
    for name in [k for k, v in values.items() if v is None]:
        data.pop(name, None)
    return data


def split(moment: dt.datetime, name: str, zone: str = "Asia/Shanghai") -> dict[str, str]:
    """An aware datetime as the admin's split date/time widget posts it: on the site's clock (the factories'
    sites are in Asia/Shanghai)."""
    moment = moment.astimezone(ZoneInfo(zone))
    return {f"{name}_0": moment.strftime("%Y-%m-%d"), f"{name}_1": moment.strftime("%H:%M:%S")}


def refused(response: Any, field: str | None, message: str) -> None:
    assert response.status_code == 200, response.status_code
    form = response.context["adminform"].form
    key = field or "__all__"
    assert key in form.errors, form.errors
    assert any(message in e for e in form.errors[key]), form.errors[key]


def infusion_data(client: Any, subject: Subject, *, lot: ProductLot | None = None, cells_per_kg: int = 1_000_000,
                  infused_at: dt.datetime | None = None) -> dict[str, Any]:
    lot = lot or subject.lots.get()
    return add_form_data(client, "infusion", subject=subject.pk, lot=lot.pk,
                         dose_level=subject.trial.dose_levels.get().pk, cells_per_kg=cells_per_kg,
                         fraction_number=1, planned_fractions=1, **split(infused_at or at(days_ago(5)), "infused_at"))


def event_data(client: Any, subject: Subject, **values: Any) -> dict[str, Any]:
    base = {"subject": subject.pk, "category": "ctcae", "term": "Febrile neutropenia", "onset_on": days_ago(3),
            "grade": 3, "related_to_product": "possible", "related_to_lymphodepletion": "probable",
            "outcome": "not_recovered", "action_taken": "none"}
    return add_form_data(client, "adverseevent", **{**base, **values})


class CourseTable(HTMLParser):
    """The rows of <table id="course"> as lists of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.inside, self.rows, self.cell = False, [], None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("id", "course") in attrs:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell += data


def course_rows(response: Any, *, with_course_day: bool = False) -> list[list[str]]:
    """The subject page's course table: date, study day, [course day,] record, details."""
    parser = CourseTable()
    parser.feed(response.content.decode())
    rows = [row for row in parser.rows if row and row[0] != "Date"]
    return rows if with_course_day else [[*row[:2], *row[3:]] for row in rows]


# --- 1. refusals through the add forms ------------------------------------------------------------


def test_infusion_outside_lymphodepletion_window_is_refused_on_infused_at(world, login):
    subject = site_a(world, lymphodepleted_subject)  # last LD dose 8 days ago; window is 2..7 days after
    client = login(world.coordinator)
    response = client.post(add_url("infusion"), infusion_data(client, subject, infused_at=at(days_ago(7))))
    refused(response, "infused_at", "days after the last lymphodepletion dose")
    assert not Infusion.objects.filter(subject=subject).exists()
    subject.refresh_from_db()
    assert subject.status == SubjectStatus.LYMPHODEPLETED


def test_infusion_with_another_subjects_lot_is_refused_on_lot(world, login):
    subject = site_a(world, lymphodepleted_subject)
    other = site_a(world, apheresed_subject)
    other_lot = released_lot(subject=other, coordinator=world.coordinator)
    client = login(world.coordinator)
    response = client.post(add_url("infusion"), infusion_data(client, subject, lot=other_lot))
    refused(response, "lot", f"is not a released product of {subject.code}")
    assert not Infusion.objects.exists()


def test_infusion_with_a_lot_not_released_is_not_accepted(world, login):
    subject = site_a(world, lymphodepleted_subject)
    client = login(world.coordinator)
    lot = subject.lots.get()
    # A second lot, still in manufacture: the lot choice offers released lots only.
    manufacturing = treatment.register_lot(subject=subject, product=subject.trial.products.get(),
                                           lot_number="LOT-SECOND", source="autologous",
                                           collection=subject.collections.get(), by=world.coordinator)
    response = client.post(add_url("infusion"), infusion_data(client, subject, lot=manufacturing))
    assert response.status_code == 200
    assert "Select a valid choice" in response.context["adminform"].form.errors["lot"][0]
    assert not Infusion.objects.exists()
    # The released lot of the same subject is accepted.
    response = client.post(add_url("infusion"), infusion_data(client, subject, lot=lot))
    assert response.status_code == 302
    assert Infusion.objects.get(subject=subject).lot == lot


def test_infusion_dose_outside_tolerance_is_refused_on_cells_per_kg(world, login):
    subject = site_a(world, lymphodepleted_subject)  # DL1: 1e6 cells/kg ±20%
    client = login(world.coordinator)
    response = client.post(add_url("infusion"), infusion_data(client, subject, cells_per_kg=1_300_000))
    refused(response, "cells_per_kg", "DL1 allows")
    assert not Infusion.objects.exists()


def test_successful_infusion_redirects_and_moves_subject_to_follow_up(world, login):
    subject = site_a(world, lymphodepleted_subject)
    client = login(world.coordinator)
    response = client.post(add_url("infusion"), infusion_data(client, subject))
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    infusion = Infusion.objects.get(subject=subject)
    assert infusion.infused_on == days_ago(5) and infusion.total_cells == Decimal(70_000_000)
    subject.refresh_from_db()
    assert subject.status == SubjectStatus.FOLLOW_UP


def course_without_doses(world: Any) -> Any:
    subject = site_a(world, apheresed_subject)
    released_lot(subject=subject, coordinator=world.coordinator)
    return treatment.start_lymphodepletion(subject=subject, regimen=subject.trial.regimens.get(),
                                           planned_infusion_on=days_ago(3), by=world.coordinator)


def dose_post(response: Any, **values: Any) -> dict[str, Any]:
    (inline,) = response.context["inline_admin_formsets"]
    prefix = inline.formset.prefix
    data = {f"{prefix}-TOTAL_FORMS": "1", f"{prefix}-INITIAL_FORMS": "0", f"{prefix}-MIN_NUM_FORMS": "0",
            f"{prefix}-MAX_NUM_FORMS": "1000"}
    data.update({f"{prefix}-0-{name}": value for name, value in values.items()})
    return data


def test_lymphodepletion_dose_outside_tolerance_needs_a_deviation_reason(world, login):
    course = course_without_doses(world)
    agent = course.regimen.agents.get(agent="fludarabine")  # 30 mg/m² × 1.818 m² = 54.5 mg, ±10%
    client = login(world.coordinator)
    page = client.get(change_url(course))
    assert page.status_code == 200
    dose = {"agent": agent.pk, "given_on": days_ago(8).isoformat(), "administered_mg": "70.0"}

    response = client.post(change_url(course), dose_post(page, **dose, deviation_reason=""))
    assert response.status_code == 200
    (inline,) = response.context["inline_admin_formsets"]
    errors = inline.formset.errors[0]
    assert "deviation_reason" in errors, inline.formset.errors
    assert "give a deviation reason" in errors["deviation_reason"][0]
    assert not LymphodepletionDose.objects.filter(course=course).exists()

    response = client.post(change_url(course), dose_post(page, **dose, deviation_reason="Dosed on actual weight"))
    assert response.status_code == 302, response.context and response.context["inline_admin_formsets"][0].formset.errors
    saved = LymphodepletionDose.objects.get(course=course)
    assert (saved.agent, saved.day, saved.given_on) == (agent, -5, days_ago(8))
    assert saved.administered_mg == Decimal("70.0") and saved.planned_mg == Decimal("54.5")
    assert saved.deviation_reason == "Dosed on actual weight"
    assert saved.recorded_by == world.coordinator


def test_serious_event_without_criterion_is_refused_on_serious(world, login):
    subject = site_a(world)
    client = login(world.coordinator)
    data = event_data(client, subject, serious="on", **split(at(days_ago(3)), "site_aware_at"))
    response = client.post(add_url("adverseevent"), data)
    refused(response, "serious", "Tick at least one seriousness criterion.")
    assert not AdverseEvent.objects.exists()

    data["sae_hospitalisation"] = "on"  # the same event with a criterion is accepted
    response = client.post(add_url("adverseevent"), data)
    assert response.status_code == 302
    event = AdverseEvent.objects.get(subject=subject)
    assert event.serious and event.report_due_at == at(days_ago(3)) + dt.timedelta(hours=24)


def test_crs_assessment_through_the_event_page_derives_the_grade(world, login):
    subject = site_a(world)
    client = login(world.coordinator)
    data = event_data(client, subject, category="crs", term="Cytokine release syndrome", onset_on=days_ago(4),
                      grade=None)
    response = client.post(add_url("adverseevent"), data)
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    event = AdverseEvent.objects.get(subject=subject)
    assert (event.category, event.grade) == ("crs", 0)

    page = client.get(change_url(event))
    assert page.status_code == 200
    (inline,) = page.context["inline_admin_formsets"]
    prefix = inline.formset.prefix
    post = {f"{prefix}-TOTAL_FORMS": "1", f"{prefix}-INITIAL_FORMS": "0", f"{prefix}-MIN_NUM_FORMS": "0",
            f"{prefix}-MAX_NUM_FORMS": "1000", f"{prefix}-0-o2_device": "low_flow_nc",
            f"{prefix}-0-max_temp_c": "39.5", f"{prefix}-0-hypotension": "on",
            f"{prefix}-0-vasopressors": "norepinephrine", f"{prefix}-0-o2_flow_lpm": "2",
            **{f"{prefix}-0-{k}": v for k, v in split(at(days_ago(4), 12), "assessed_at").items()}}
    response = client.post(change_url(event), {**change_form_data(page), **post})  # the event's fields unchanged
    assert response.status_code == 302, response.context and response.context["inline_admin_formsets"][0].formset.errors
    assessment = CrsAssessment.objects.get(event=event)
    assert assessment.derived_grade == 3 and assessment.override_grade is None
    assert assessment.vasopressors == ["norepinephrine"] and assessment.o2_flow_lpm == Decimal("2")
    assert assessment.recorded_by == world.coordinator
    event.refresh_from_db()
    assert event.grade == 3


def test_response_before_infusion_is_refused(world, login):
    subject = site_a(world, lymphodepleted_subject)
    client = login(world.coordinator)
    data = add_form_data(client, "responseassessment", subject=subject.pk, assessed_on=days_ago(1),
                         category="nr", marrow_blasts_pct="40")
    response = client.post(add_url("responseassessment"), data)
    refused(response, None, "has no CAR-T infusion before")
    assert not ResponseAssessment.objects.exists()


def test_response_dated_before_day_zero_is_refused(world, login):
    subject = site_a(world)  # infused 5 days ago
    client = login(world.coordinator)
    data = add_form_data(client, "responseassessment", subject=subject.pk, assessed_on=days_ago(6),
                         category="nr", marrow_blasts_pct="40")
    response = client.post(add_url("responseassessment"), data)
    refused(response, None, "has no CAR-T infusion before")
    assert not ResponseAssessment.objects.exists()


def test_death_without_cause_is_refused_on_cause_of_death(world, login):
    subject = site_a(world)
    client = login(world.coordinator)
    data = add_form_data(client, "followup", subject=subject.pk, kind="death", event_on=days_ago(1),
                         cause_of_death="")
    response = client.post(add_url("followup"), data)
    refused(response, "cause_of_death", "Give the cause of death.")
    assert not FollowUp.objects.exists()
    subject.refresh_from_db()
    assert subject.status == SubjectStatus.FOLLOW_UP


def test_death_of_unknown_cause_through_the_admin(world, login):
    subject = site_a(world)
    client = login(world.coordinator)
    data = add_form_data(client, "followup", subject=subject.pk, kind="death", event_on=days_ago(1),
                         cause_of_death="Sepsis", cause_of_death_unknown="on")
    refused(client.post(add_url("followup"), data), "cause_of_death", "Give the cause of death or mark it unknown")
    assert not FollowUp.objects.exists()
    data["cause_of_death"] = ""
    response = client.post(add_url("followup"), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    death = FollowUp.objects.get()
    assert (death.kind, death.cause_of_death, death.cause_of_death_unknown) == ("death", "", True)
    subject.refresh_from_db()
    assert (subject.status, subject.off_study_detail) == (SubjectStatus.OFF_STUDY, "Cause unknown")


# --- 3. the course on the subject page -------------------------------------------------------------


def add_crs(subject: Subject, by: Any, *, assessments: int = 1) -> AdverseEvent:
    event = safety.record_adverse_event(subject=subject, by=by, data=safety.EventInput(
        category="crs", term="Cytokine release syndrome", onset_on=days_ago(4), related_to_product="definite",
        related_to_lymphodepletion="unlikely"))
    for hour in range(assessments):
        safety.record_crs_assessment(event=event, assessed_at=at(days_ago(4), 8 + hour), by=by,
                                     components=CRS_COMPONENTS)
    return event


def test_subject_page_shows_the_course_in_order_with_study_days(world, login):
    subject = site_a(world)
    by = world.coordinator
    event = add_crs(subject, by)
    safety.record_medication(subject=subject, drug="tocilizumab", dose=Decimal("8"), dose_unit="mg/kg", route="iv",
                             given_at=at(days_ago(4), 12), adverse_event=event, by=by)
    outcome.record_response(subject=subject, assessed_on=days_ago(2), category="cr_mrd_neg", by=by,
                            marrow_blasts_pct=Decimal("0.5"), mrd_flow_pct=Decimal("0.001"))
    response = login(by).get(change_url(subject))
    assert response.status_code == 200
    rows = course_rows(response)
    by_kind: dict[str, list[list[str]]] = {}
    for row in rows:
        by_kind.setdefault(row[2], []).append(row)

    ld = by_kind["Lymphodepletion"]
    assert sorted({row[1] for row in ld}) == ["-3", "-4", "-5"] and len(ld) == 6
    assert any("Fludarabine 54.5 mg (planned 54.5 mg, BSA 1.818 m²)" in row[3] for row in ld)
    (infusion,) = by_kind["Infusion"]
    assert infusion[1] == "0"
    assert f"lot LOT-{subject.code}" in infusion[3]
    assert "fraction 1/1: 1.0 × 10⁶ cells/kg, 7.0 × 10⁷ cells" in infusion[3]
    crs = by_kind["CRS"]
    assert [row[1] for row in crs] == ["1", "1"]
    assert crs[0][3] == f"Cytokine release syndrome, grade 3 ({event.grade_scale})"
    assert crs[1][3] == "Assessment at 16:00 (Asia/Shanghai): grade 3"  # 08:00 UTC in Shanghai
    (medication,) = by_kind["Medication"]
    assert medication[1] == "1" and medication[3].startswith("Tocilizumab 8 mg/kg Intravenous at ")
    (resp,) = by_kind["Response"]
    assert resp[1] == "3" and resp[3] == "CR, MRD-negative"

    # In order: dated records by date, then by kind within a day; study days never go backwards.
    days = [int(row[1]) for row in rows if row[1] != "—"]
    assert days == sorted(days)
    kinds = [row[2] for row in rows if row[2] in ("Lymphodepletion", "Infusion", "CRS", "Medication", "Response")]
    assert kinds == ["Lymphodepletion"] * 6 + ["Infusion", "CRS", "CRS", "Medication", "Response"]
    # Records before day 0 (consent, apheresis) come first and carry negative days, and no course.
    assert rows[0][2] == "Consent" and int(rows[0][1]) < -5
    course_days = {(row[3], row[2]) for row in course_rows(response, with_course_day=True)}
    assert ("Consent", "—") in course_days and ("Infusion", "C1 D0") in course_days and ("Response", "C1 D3") in \
        course_days


# --- 4. query-bounded subject page ----------------------------------------------------------------


def queries_for_subject_page(client: Any, subject: Subject) -> int:
    client.get(change_url(subject))  # warm caches (session, content types)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(change_url(subject))
    assert response.status_code == 200
    return len(ctx.captured_queries)


def long_course_subject(world: Any) -> Subject:
    """Bridging, a lymphodepletion course, an infusion, two events (CRS with 4 assessments), 3 medications,
    2 responses and a follow-up, all through the services."""
    by = world.coordinator
    subject = site_a(world, apheresed_subject)
    treatment.record_bridging(subject=subject, regimen="Dexamethasone + vincristine", started_on=days_ago(18),
                              ended_on=days_ago(14), by=by)
    released_lot(subject=subject, coordinator=by)
    day0 = days_ago(5)
    course = treatment.start_lymphodepletion(subject=subject, regimen=subject.trial.regimens.get(),
                                             planned_infusion_on=day0, by=by)
    for agent in course.regimen.agents.all():
        for day in agent.days:
            treatment.record_lymphodepletion_dose(
                course=course, agent=agent, given_on=day0 + dt.timedelta(days=day),
                administered_mg=(course.bsa_m2 * agent.dose_mg_per_m2).quantize(Decimal("0.1")), by=by)
    subject.refresh_from_db()
    treatment.record_infusion(subject=subject, lot=subject.lots.get(), dose_level=subject.trial.dose_levels.get(),
                              cells_per_kg=Decimal(1_000_000), infused_at=at(day0), by=by)
    subject.refresh_from_db()
    event = add_crs(subject, by, assessments=4)
    safety.record_adverse_event(subject=subject, by=by, data=safety.EventInput(
        category="ctcae", term="Febrile neutropenia", grade=3, onset_on=days_ago(3), related_to_product="possible",
        related_to_lymphodepletion="probable"))
    for hour, drug in enumerate(["tocilizumab", "dexamethasone", "paracetamol"]):
        safety.record_medication(subject=subject, drug=drug, dose=Decimal("10"), dose_unit="mg", route="iv",
                                 given_at=at(days_ago(3), 8 + hour), adverse_event=event, by=by)
    outcome.record_response(subject=subject, assessed_on=days_ago(2), category="nr", by=by,
                            marrow_blasts_pct=Decimal("30"))
    outcome.record_response(subject=subject, assessed_on=days_ago(1), category="cr", by=by,
                            marrow_blasts_pct=Decimal("1"))
    outcome.record_follow_up(subject=subject, kind="last_contact", event_on=days_ago(1), by=by)
    return subject


def test_subject_page_queries_do_not_grow_with_the_course(world, login):
    short = site_a(world)
    long = long_course_subject(world)
    assert CrsAssessment.objects.filter(event__subject=long).count() == 4
    assert ConcomitantMedication.objects.filter(subject=long).count() == 3
    client = login(world.coordinator)
    rows = course_rows(client.get(change_url(long)))
    assert len(rows) > len(course_rows(client.get(change_url(short)))) + 10
    assert queries_for_subject_page(client, long) == queries_for_subject_page(client, short)


def test_subject_page_reads_each_of_the_subjects_records_once(world, login):
    """The course list, the desk's rules, the calendar, the state and the list of signatures read the same rows:
    once between them."""
    subject = long_course_subject(world)
    client = login(world.coordinator)
    client.get(change_url(subject))  # warm caches (session, content types)
    with CaptureQueriesContext(connection) as ctx:
        client.get(change_url(subject))
    tables = ["patients_subject", "patients_consent", "patients_lymphodepletioncourse", "patients_lymphodepletiondose",
              "patients_productlot", "patients_infusion", "patients_followup", "patients_responseassessment",
              "signatures_signature"]
    reads = {table: sum(f'FROM "{table}"' in q["sql"] for q in ctx.captured_queries) for table in tables}
    day0s = sum('"patients_infusion"."fraction_number" = 1' in q["sql"] for q in ctx.captured_queries)
    assert reads == {**dict.fromkeys(tables, 1), "patients_infusion": 1 + day0s} and day0s == 1
    assert not any('FROM "dataqueries_dataquery"' in q["sql"] for q in ctx.captured_queries)  # counted with the subject


# --- 5. site isolation ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", [Infusion, AdverseEvent, "LymphodepletionCourse", ProductLot])
def test_site_b_coordinator_sees_no_site_a_course_records(world, login, model):
    a = site_a(world)
    b = infused_subject(coordinator=world.coordinator_b, investigator=world.investigator_b, trial=world.trial,
                        site=world.site_b)
    for subject, by in ((a, world.coordinator), (b, world.coordinator_b)):
        safety.record_adverse_event(subject=subject, by=by, data=safety.EventInput(
            category="ctcae", term="Febrile neutropenia", grade=3, onset_on=days_ago(3),
            related_to_product="possible", related_to_lymphodepletion="probable"))
    if model == "LymphodepletionCourse":
        model = a.ld_courses.model
    name = model._meta.model_name
    record_a, record_b = model.objects.get(subject=a), model.objects.get(subject=b)

    client_b = login(world.coordinator_b)
    changelist = client_b.get(reverse(f"admin:patients_{name}_changelist"))
    assert changelist.status_code == 200
    listed = {obj.pk for obj in changelist.context["cl"].result_list}
    assert listed == {record_b.pk}
    assert changelist.context["cl"].result_count == 1
    assert client_b.get(change_url(record_a)).status_code == 404
    assert client_b.get(change_url(record_b)).status_code == 200
    assert login(world.coordinator).get(change_url(record_a)).status_code == 200


def test_course_lists_show_the_study_day_of_each_record(world, login):
    subject = infused_subject(coordinator=world.coordinator, investigator=world.investigator, trial=world.trial,
                              site=world.site_a)
    client = login(world.coordinator)
    infusions = client.get(reverse("admin:patients_infusion_changelist"))
    assert infusions.status_code == 200
    assert infusions.context["cl"].result_list[0].course_day0s == [subject.infusions.get().infused_on]
    assert "<td class=\"field-course_day\">C1 D0</td>" in infusions.content.decode()
    assert '<td class="field-study_day">0</td>' in infusions.content.decode()
    courses = client.get(reverse("admin:patients_lymphodepletioncourse_changelist")).content.decode()
    assert '<td class="field-study_day">0</td>' in courses  # the planned day 0 of the course


# --- donor collections -------------------------------------------------------------------------------


def test_donor_collection_through_the_admin_and_scoped_to_the_site(world, login):
    from patients.models import DonorCollection

    subject = site_a(world, make=apheresed_subject)
    client = login(world.coordinator)
    data = add_form_data(client, "donorcollection", subject=subject.pk, donor_code="D-77", donor_type="hsct_donor",
                         hla_matched="10", hla_total="10", collection_id="DC-77", collected_on=days_ago(2))
    refused(client.post(add_url("donorcollection"), data), "donor_type", "has no prior allogeneic HSCT")
    assert not DonorCollection.objects.exists()
    data["donor_type"] = "new_donor"
    response = client.post(add_url("donorcollection"), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    collection = DonorCollection.objects.get()
    assert (collection.subject, collection.hla_match, collection.recorded_by) == (subject, "10/10", world.coordinator)
    lot_form = client.get(add_url("productlot")).context["adminform"].form
    assert list(lot_form.fields["donor_collection"].queryset) == [collection]
    other = login(world.coordinator_b)
    assert other.get(change_url(collection)).status_code == 404
    listed = other.get(reverse("admin:patients_donorcollection_changelist"))
    assert listed.status_code == 200 and list(listed.context["cl"].result_list) == []
    assert list(other.get(add_url("productlot")).context["adminform"].form.fields["donor_collection"].queryset) == []
