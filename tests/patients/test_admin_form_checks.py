"""Rules that refuse a save run in the admin form's clean(), so the refusal shows on its field with what was typed
kept, before anything is written: the same check_* function the service calls (issue 13, "forms that never
lose input"). Each test posts a form the rule refuses and reads the error from the re-rendered form."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.urls import reverse

from config.errors import DomainError
from patients.models import (
    AdverseEvent,
    BridgingTherapy,
    ConcomitantMedication,
    CrsAssessment,
    IcansAssessment,
    LymphodepletionCourse,
    ProductLot,
    Subject,
)
from patients.services import safety, treatment
from tests.admin_forms import change_form_data, form_values
from tests.factories import TODAY, apheresed_subject, at, days_ago, enrolled_subject, infused_subject

pytestmark = pytest.mark.django_db


def add_form(client: Any, model: str, **values: Any) -> dict[str, Any]:
    response = client.get(reverse(f"admin:patients_{model}_add"))
    assert response.status_code == 200
    return {**form_values(response.context["adminform"].form), **values}


def post_add(client: Any, model: str, **values: Any) -> Any:
    return client.post(reverse(f"admin:patients_{model}_add"), add_form(client, model, **values))


def refused_on(response: Any, field: str | None, message: str, *, form: Any = None) -> Any:
    assert response.status_code == 200, response.status_code  # the form again, not a redirect
    form = form or response.context["adminform"].form
    errors = form.errors.get(field or "__all__", [])
    assert any(message in error for error in errors), form.errors
    return form


def local(moment: dt.datetime, name: str, prefix: str = "") -> dict[str, str]:
    moment = moment.astimezone(dt.timezone(dt.timedelta(hours=8)))  # the factories' sites: Asia/Shanghai
    return {f"{prefix}{name}_0": moment.strftime("%Y-%m-%d"), f"{prefix}{name}_1": moment.strftime("%H:%M:%S")}


def people(world: Any) -> dict[str, Any]:
    return {"coordinator": world.coordinator, "investigator": world.investigator, "trial": world.trial,
            "site": world.site_a}


# --- product lots ----------------------------------------------------------------------------------


def test_a_duplicate_lot_number_is_refused_on_the_field_before_saving(world, login):
    subject = apheresed_subject(**people(world))
    treatment.register_lot(subject=subject, product=world.trial.products.get(), lot_number="LOT-1",
                           source="autologous", collection=subject.collections.get(), by=world.coordinator)
    with pytest.raises(DomainError) as err:
        treatment.check_new_lot_number(lot_number="LOT-1")
    assert (err.value.code, err.value.field) == ("duplicate_lot_number", "lot_number")

    response = post_add(login(world.coordinator), "productlot", subject=subject.pk,
                        product=world.trial.products.get().pk, lot_number="LOT-1", source="autologous",
                        collection=subject.collections.get().pk)
    form = refused_on(response, "lot_number", "Lot LOT-1 is already registered.")
    assert form["lot_number"].value() == "LOT-1" and str(form["collection"].value()) == str(
        subject.collections.get().pk)
    assert ProductLot.objects.count() == 1


def test_a_manufacturing_failure_is_checked_on_the_form(world, login):
    subject = apheresed_subject(**people(world))
    lot = treatment.register_lot(subject=subject, product=world.trial.products.get(), lot_number="LOT-2",
                                 source="autologous", collection=subject.collections.get(), by=world.coordinator)
    with pytest.raises(DomainError) as err:
        treatment.check_manufacturing_failure(lot=lot, failed_on=TODAY + dt.timedelta(days=3), reason="Sterility")
    assert (err.value.code, err.value.field) == ("date_in_future", "failed_on")

    client = login(world.coordinator)
    url = reverse("admin:patients_productlot_change", args=[lot.pk])
    page = client.get(url)
    response = client.post(url, change_form_data(page, failure_reason="Sterility test positive",
                                                 failed_on=TODAY + dt.timedelta(days=3)))
    form = refused_on(response, "failed_on", "is in the future")
    assert form["failure_reason"].value() == "Sterility test positive"
    lot.refresh_from_db()
    assert lot.status == ProductLot.Status.MANUFACTURING


def test_a_failure_of_a_lot_no_longer_in_manufacture_is_refused():
    lot = ProductLot(lot_number="LOT-X", status=ProductLot.Status.RELEASED)
    with pytest.raises(DomainError) as err:
        treatment.check_manufacturing_failure(lot=lot, failed_on=TODAY, reason="late")
    assert err.value.code == "lot_not_in_manufacture"


# --- lymphodepletion: the BSA needs a height and weight ---------------------------------------------


def test_a_course_without_height_and_weight_is_refused_on_the_form(world, login):
    subject = apheresed_subject(**people(world))  # measured 20 days ago
    treatment.register_lot(subject=subject, product=world.trial.products.get(), lot_number="LOT-3",
                           source="autologous", collection=subject.collections.get(), by=world.coordinator)
    regimen = world.trial.regimens.get()
    early = days_ago(25)  # first dose 30 days ago: before any measurement
    with pytest.raises(DomainError) as err:
        treatment.check_lymphodepletion_course(subject=subject, regimen=regimen, planned_infusion_on=early)
    assert (err.value.code, err.value.field) == ("no_measurement", "planned_infusion_on")

    response = post_add(login(world.coordinator), "lymphodepletioncourse", subject=subject.pk, regimen=regimen.pk,
                        planned_infusion_on=early)
    form = refused_on(response, "planned_infusion_on", "Record height and weight")
    assert form["planned_infusion_on"].value() == str(early)
    assert not LymphodepletionCourse.objects.exists()


# --- bridging and medications -----------------------------------------------------------------------


def test_bridging_dates_are_checked_on_the_form(world, login):
    subject = enrolled_subject(**people(world))
    response = post_add(login(world.coordinator), "bridgingtherapy", subject=subject.pk, regimen="Dexamethasone",
                        started_on=days_ago(5), ended_on=days_ago(7))
    form = refused_on(response, "ended_on", "Bridging cannot end before it starts.")
    assert form["regimen"].value() == "Dexamethasone"
    response = post_add(login(world.coordinator), "bridgingtherapy", subject=subject.pk, regimen="Vincristine",
                        started_on=TODAY + dt.timedelta(days=2))
    refused_on(response, "started_on", "is in the future")
    assert not BridgingTherapy.objects.exists()


def test_the_medication_rule_runs_on_the_form(world, login):
    subject = infused_subject(**people(world))
    client = login(world.coordinator)
    response = post_add(client, "concomitantmedication", subject=subject.pk, drug="other", dose="5", dose_unit="mg",
                        route="oral", indication="Nausea", **local(at(days_ago(1)), "given_at"))
    form = refused_on(response, "drug_name", "Name the medication.")
    assert form["indication"].value() == "Nausea"

    other = infused_subject(**people(world))
    event = safety.record_adverse_event(subject=other, by=world.coordinator, data=safety.EventInput(
        category="ctcae", term="Nausea", grade=1, onset_on=days_ago(2), related_to_product="unlikely",
        related_to_lymphodepletion="unlikely"))
    response = post_add(client, "concomitantmedication", subject=subject.pk, adverse_event=event.pk,
                        drug="paracetamol", dose="500", dose_unit="mg", route="oral",
                        **local(at(days_ago(1)), "given_at"))
    refused_on(response, "adverse_event", "The adverse event belongs to another subject.")
    assert not ConcomitantMedication.objects.exists()


# --- CRS and ICANS assessments, refused on the inline row with the values kept -----------------------


def assessment_post(page: Any, model: Any, values: dict[str, str]) -> tuple[dict[str, Any], str]:
    [inline] = [i for i in page.context["inline_admin_formsets"] if i.formset.model is model]
    prefix = inline.formset.prefix
    row = {f"{prefix}-TOTAL_FORMS": "1", f"{prefix}-INITIAL_FORMS": "0",
           **{f"{prefix}-0-{k}": v for k, v in values.items()}}
    return {**change_form_data(page), **row}, prefix


def inline_form(response: Any, model: Any) -> Any:
    [inline] = [i for i in response.context["inline_admin_formsets"] if i.formset.model is model]
    return inline.formset.forms[0]


def episode(subject: Subject, by: Any, category: str) -> AdverseEvent:
    return safety.record_adverse_event(subject=subject, by=by, data=safety.EventInput(
        category=category, term={"crs": "Cytokine release syndrome", "icans": "ICANS"}[category],
        onset_on=days_ago(3), related_to_product="definite", related_to_lymphodepletion="unlikely"))


def test_a_crs_assessment_before_onset_is_refused_on_its_field_with_the_values_kept(world, login):
    event = episode(infused_subject(**people(world)), world.coordinator, "crs")
    with pytest.raises(DomainError) as err:
        safety.check_crs_assessment(event=event, assessed_at=at(days_ago(5)), components={})
    assert (err.value.code, err.value.field) == ("assessment_before_onset", "assessed_at")

    client = login(world.coordinator)
    url = reverse("admin:patients_adverseevent_change", args=[event.pk])
    data, _prefix = assessment_post(client.get(url), CrsAssessment, {
        "max_temp_c": "39.4", "hypotension": "on", "o2_device": "low_flow_nc", "o2_flow_lpm": "3",
        **local(at(days_ago(5)), "assessed_at")})
    response = client.post(url, data)
    form = inline_form(response, CrsAssessment)
    refused_on(response, "assessed_at", "The event began on", form=form)
    assert (form["max_temp_c"].value(), form["o2_flow_lpm"].value(), form["o2_device"].value()) == (
        "39.4", "3", "low_flow_nc")
    assert not CrsAssessment.objects.exists()


def test_crs_components_that_cannot_be_graded_are_refused_before_saving(world):
    event = episode(infused_subject(**people(world)), world.coordinator, "crs")
    with pytest.raises(DomainError) as err:
        safety.check_crs_assessment(event=event, assessed_at=at(days_ago(2)), components={"o2_device": "warp"})
    assert err.value.code == "invalid_components"
    with pytest.raises(DomainError) as err:
        safety.check_crs_assessment(event=event, assessed_at=at(days_ago(2)), components={}, override_grade=2)
    assert (err.value.code, err.value.field) == ("override_needs_reason", "override_reason")


def test_an_icans_assessment_of_a_subject_of_unknown_age_is_refused_on_the_form(world, login):
    subject = infused_subject(**people(world))
    event = episode(subject, world.coordinator, "icans")
    Subject.objects.filter(pk=subject.pk).update(age_at_consent=None)  # a record from before the rule
    event = AdverseEvent.objects.select_related("subject__site").get(pk=event.pk)
    with pytest.raises(DomainError) as err:
        safety.check_icans_assessment(event=event, assessed_at=at(days_ago(2)), components={})
    assert err.value.code == "age_unknown"

    client = login(world.coordinator)
    url = reverse("admin:patients_adverseevent_change", args=[event.pk])
    data, _prefix = assessment_post(client.get(url), IcansAssessment, {
        "objects_named": "2", "consciousness": "alert", "seizure": "none", "motor": "none",
        "cerebral_oedema": "none", **local(at(days_ago(2)), "assessed_at")})
    response = client.post(url, data)
    form = inline_form(response, IcansAssessment)
    refused_on(response, None, "has no age at consent", form=form)
    assert form["objects_named"].value() == "2"
    assert not IcansAssessment.objects.exists()


def test_a_valid_crs_assessment_still_saves_through_the_service(world, login):
    event = episode(infused_subject(**people(world)), world.coordinator, "crs")
    client = login(world.coordinator)
    url = reverse("admin:patients_adverseevent_change", args=[event.pk])
    data, _prefix = assessment_post(client.get(url), CrsAssessment, {
        "max_temp_c": "38.5", "o2_device": "none", **local(at(days_ago(2)), "assessed_at")})
    assert client.post(url, data).status_code == 302
    assert CrsAssessment.objects.get(event=event).derived_grade == 1
    assert Decimal(CrsAssessment.objects.get(event=event).max_temp_c) == Decimal("38.5")
