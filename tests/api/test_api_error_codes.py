"""Error codes are a closed enumeration (config.error_codes), documented in the schema: every code the source
raises is listed, every listed code is asserted by some test, and the refusals no other test produced are
produced here, each through the service or the API that raises it."""

from __future__ import annotations

import ast
import datetime as dt
import inspect
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from drf_spectacular.generators import SchemaGenerator
from rest_framework import exceptions

from config.error_codes import ERROR_CODES, ROW_ERROR_CODES
from config.errors import RuleViolation, StateConflict
from patients.models import ProductLot
from patients.services import enrolment, measurements, safety, treatment
from tests.api.support import api_client, post_json, post_results, result_row, token_client
from tests.factories import (
    MembershipFactory,
    TrialSiteFactory,
    apheresed_subject,
    at,
    build_trial,
    consented,
    days_ago,
    infused_subject,
    screened,
)
from trials.services import issue_service_account

ROOT = Path(__file__).resolve().parents[2]
DOMAIN_ERRORS = {"DomainError", "RuleViolation", "StateConflict", "PermissionRefused"}
SKIPPED_DIRS = {".venv", "tests", "migrations", "var", "bench", "node_modules"}
# Functions that pass on a code chosen elsewhere (file:function), and where that code is checked.
PASSED_ON = {
    "assays/services.py:_checked": "a locked subject's row takes the lock's code (locking: data_locked, data_frozen)",
    "config/api.py:exception_handler": "DRF's own codes (test_every_framework_refusal_...)",
}


# --- the static check: every code raised in the source ------------------------------------------------


def source_trees() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(ROOT.rglob("*.py")):
        if not SKIPPED_DIRS & set(path.relative_to(ROOT).parts):
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text())


def error_classes(trees: list[tuple[str, ast.Module]]) -> tuple[set[str], set[str]]:
    """The DomainError family by name, and those of its members that take other arguments (own __init__)."""
    family, own_init = set(DOMAIN_ERRORS), set()
    for _ in range(3):  # subclasses of subclasses
        for _path, tree in trees:
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and any(_name(base) in family for base in node.bases):
                    family.add(node.name)
                    if any(isinstance(item, ast.FunctionDef) and item.name == "__init__" for item in node.body):
                        own_init.add(node.name)
    return family, own_init


def _name(node: ast.AST) -> str | None:
    return getattr(node, "id", None) or getattr(node, "attr", None)


def _constants(node: ast.AST, function: ast.AST | None, calls: dict[str, list[ast.Call]]) -> list[str] | None:
    """The codes an argument can hold, or None if the source does not say (the test then fails)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        body, orelse = _constants(node.body, function, calls), _constants(node.orelse, function, calls)
        return None if body is None or orelse is None else body + orelse
    if isinstance(node, ast.Attribute) and node.attr == "code":
        return []  # passes on a code raised (and checked) elsewhere
    if isinstance(node, ast.Name) and isinstance(function, ast.FunctionDef):
        return _name_constants(node.id, function, calls)
    return None


def _name_constants(name: str, function: ast.FunctionDef, calls: dict[str, list[ast.Call]]) -> list[str] | None:
    """A local assigned constants, or a parameter: its default and what every caller passes by keyword."""
    found: list[str] = []
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and any(_name(target) == name for target in node.targets):
            values = _constants(node.value, None, calls)
            if values is None:
                return None
            found += values
    arguments = function.args.args + function.args.kwonlyargs
    defaults = [None] * (len(function.args.args) - len(function.args.defaults)) + function.args.defaults + \
        function.args.kw_defaults
    for argument, default in zip(arguments, defaults, strict=True):
        if argument.arg == name:
            found += _constants(default, None, calls) or [] if default is not None else []
            for call in calls.get(function.name, []):
                for keyword in call.keywords:
                    if keyword.arg == name:
                        values = _constants(keyword.value, None, calls)
                        if values is None:
                            return None
                        found += values
    return found or None


def raised_codes() -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """Codes of error bodies and of refused result rows, each with where it is raised, and the places
    whose code the source does not reveal."""
    trees = list(source_trees())
    family, own_init = error_classes(trees)
    calls: dict[str, list[ast.Call]] = {}
    for _path, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and (name := _name(node.func)):
                calls.setdefault(name, []).append(node)
    codes: dict[str, list[str]] = {}
    rows: dict[str, list[str]] = {}
    unknown: list[str] = []

    def add(target: dict[str, list[str]], where: str, node: ast.AST, function: ast.AST | None) -> None:
        values = _constants(node, function, calls)
        if values is None and f"{where.split(':')[0]}:{getattr(function, 'name', '')}" not in PASSED_ON:
            unknown.append(f"{where}: {ast.unparse(node)}")
        for value in values or []:
            target.setdefault(value, []).append(where)

    for path, tree in trees:
        for function, node in _walk_with_function(tree):
            where = f"{path}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call):
                name = _name(node.func)
                is_super_init = name == "__init__" and isinstance(node.func, ast.Attribute) and \
                    isinstance(node.func.value, ast.Call) and _name(node.func.value.func) == "super"
                if node.args and ((name in family and name not in own_init) or name == "error_body" or (
                        is_super_init and _in_class(tree, function, family))):
                    add(codes, where, node.args[0], function)
                elif name == "error" and _name(getattr(node.func, "value", None)) == "batch" and len(node.args) > 2:
                    add(rows, where, node.args[2], function)
            elif isinstance(node, ast.Assign) and any(_name(t) == "default_code" for t in node.targets):
                add(codes, where, node.value, function)
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "code" and isinstance(value, ast.Constant):
                        add(codes, where, value, function)
    return codes, rows, unknown


def _walk_with_function(tree: ast.AST) -> Iterator[tuple[ast.AST | None, ast.AST]]:
    def visit(node: ast.AST, function: ast.AST | None) -> Iterator[tuple[ast.AST | None, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            yield function, child
            yield from visit(child, child if isinstance(child, ast.FunctionDef) else function)
    yield from visit(tree, None)


def _in_class(tree: ast.AST, function: ast.AST | None, family: set[str]) -> bool:
    """Whether ``function`` is a method of a subclass of the family (whose super().__init__ takes a code)."""
    return any(isinstance(node, ast.ClassDef) and function in node.body and
               any(_name(base) in family for base in node.bases) for node in ast.walk(tree))


def test_every_code_raised_in_the_source_is_in_the_enumeration():
    codes, rows, unknown = raised_codes()
    assert unknown == [], "codes the source does not reveal; raise a literal code"
    assert len(codes) > 100  # the collector sees the services
    assert {code: where for code, where in codes.items() if code not in ERROR_CODES} == {}
    row_codes = {**ROW_ERROR_CODES, "data_locked": "", "data_frozen": ""}  # a locked subject's row: lock codes
    assert {code: where for code, where in rows.items() if code not in row_codes} == {}


def test_every_framework_refusal_the_api_can_give_is_in_the_enumeration():
    """DRF's own exceptions reach the client with their default code (config.api.exception_handler)."""
    drf = {cls.default_code for _name, cls in inspect.getmembers(exceptions, inspect.isclass)
           if issubclass(cls, exceptions.APIException) and cls is not exceptions.APIException}
    assert not settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_CLASSES")  # so `throttled` cannot happen
    assert drf - {"throttled"} <= set(ERROR_CODES)


def test_every_code_in_the_enumeration_is_asserted_by_a_test():
    """A code no test mentions is a refusal nobody has seen: write the test, or remove the dead code."""
    mentioned: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        if path.resolve() != Path(__file__).resolve():
            mentioned |= {node.value for node in ast.walk(ast.parse(path.read_text()))
                          if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    mentioned |= set(TESTED_HERE)
    assert sorted(set(ERROR_CODES) - mentioned) == []
    assert sorted(set(ROW_ERROR_CODES) - mentioned) == []


def test_the_schema_documents_the_enumeration_on_every_operation():
    schema = SchemaGenerator(api_version="v1").get_schema(request=None, public=True)
    error = schema["components"]["schemas"]["Error"]
    assert error["properties"]["code"]["enum"] == list(ERROR_CODES)
    assert all(f"`{code}`" in error["properties"]["code"]["description"] for code in ERROR_CODES)
    assert schema["components"]["schemas"]["RowError"]["properties"]["code"]["enum"][:len(ROW_ERROR_CODES)] == \
        list(ROW_ERROR_CODES)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            expected = {"400", "401", "403", "404", "406", "413", "429", "500"} | (
                {"409", "415"} if method in ("post", "put", "patch", "delete") else set())
            assert expected <= documented, (method, path)
            assert operation["responses"]["404"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"}


# --- refusals no other test produced -----------------------------------------------------------------

# Each code below is asserted by a test in this module (the mention check skips this file's own table).
TESTED_HERE = ["ambiguous_code", "ambiguous_screening_number", "before_apheresis", "before_release",
               "duplicate_lot_number", "not_a_characteristic", "nothing_to_confirm", "sites_required",
               "age_unknown", "conflict", "conflicting_result", "rows_invalid", "accession_mismatch",
               "null_character", "unknown_status", "method_not_allowed", "not_acceptable"]


def _clinical(world, site=None):
    return {"trial": world.trial, "site": site or world.site_a, "coordinator": world.coordinator,
            "investigator": world.investigator}


def _second_trial(world):
    """The coordinator also works on a second trial at site A (subject codes restart per trial)."""
    second = build_trial(code="SECOND")
    TrialSiteFactory(trial=second, site=world.site_a)
    MembershipFactory(user=world.coordinator, trial=second, site=world.site_a, role="coordinator")
    return second, type(world.coordinator).objects.get(pk=world.coordinator.pk)  # with the new role


@pytest.mark.django_db
def test_a_subject_code_used_in_two_of_your_trials_is_ambiguous(world):
    first = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    trial, coordinator = _second_trial(world)
    second = screened(trial=trial, site=world.site_a, coordinator=coordinator)
    assert first.code == second.code
    client = api_client(world.coordinator)
    response = client.get(f"/api/v1/subjects/{first.code}/")
    assert response.status_code == 400
    assert response.json()["code"] == "ambiguous_code"
    assert client.get(f"/api/v1/subjects/{second.pk}/").json()["trial"] == "SECOND"


@pytest.mark.django_db
def test_a_screening_number_used_in_two_of_your_trials_needs_the_trial(world):
    screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator, screening_number="SCR-9")
    trial, coordinator = _second_trial(world)
    screened(trial=trial, site=world.site_a, coordinator=coordinator, screening_number="SCR-9")
    client = api_client(world.coordinator)
    url = "/api/v1/subjects/by-screening-number/SA/SCR-9/"
    response = client.get(url)
    assert response.status_code == 400
    assert response.json()["code"] == "ambiguous_screening_number"
    assert client.get(url, {"trial": "SECOND"}).json()["trial"] == "SECOND"


@pytest.mark.django_db
def test_lymphodepletion_before_apheresis_is_refused(world):
    subject = apheresed_subject(**_clinical(world))  # collected 19 days ago
    measurements.record_body_measurement(subject=subject, measured_on=days_ago(26), height_cm=Decimal("170"),
                                         weight_kg=Decimal("70"), by=world.coordinator)
    treatment.register_lot(subject=subject, product=world.trial.products.get(), lot_number="LOT-1",
                           source="autologous", collection=subject.collections.get(), by=world.coordinator)
    course = treatment.start_lymphodepletion(subject=subject, regimen=world.trial.regimens.get(),
                                             planned_infusion_on=days_ago(20), by=world.coordinator)
    agent = course.regimen.agents.order_by("pk").first()
    with pytest.raises(RuleViolation) as err:
        treatment.record_lymphodepletion_dose(course=course, agent=agent,
                                              given_on=days_ago(20) + dt.timedelta(days=agent.days[0]),
                                              administered_mg=Decimal("50"), by=world.coordinator)
    assert (err.value.code, err.value.field) == ("before_apheresis", "given_on")
    assert not course.doses.exists()


@pytest.mark.django_db
def test_an_infusion_before_the_lots_release_is_refused(world):
    subject = apheresed_subject(**_clinical(world))
    lot = treatment.register_lot(subject=subject, product=world.trial.products.get(), lot_number="LOT-LATE",
                                 source="autologous", collection=subject.collections.get(), by=world.coordinator)
    treatment.release_lot(lot=lot, release_date=days_ago(2), viability_pct=Decimal("92"),
                          car_positive_pct=Decimal("41"), total_viable_car_cells=Decimal("2.1e8"), qc_pass=True,
                          by=world.coordinator)
    day0 = days_ago(4)
    regimen = world.trial.regimens.get()
    course = treatment.start_lymphodepletion(subject=subject, regimen=regimen, planned_infusion_on=day0,
                                             by=world.coordinator)
    for agent in regimen.agents.all():
        for day in agent.days:
            treatment.record_lymphodepletion_dose(
                course=course, agent=agent, given_on=day0 + dt.timedelta(days=day),
                administered_mg=(course.bsa_m2 * agent.dose_mg_per_m2).quantize(Decimal("0.1")),
                by=world.coordinator)
    subject.refresh_from_db()
    response = post_json(api_client(world.coordinator), "/api/v1/infusions/", {
        "subject": subject.code, "lot": "LOT-LATE", "dose_level": "DL1", "infused_at": at(day0).isoformat(),
        "cells_per_kg": "1000000"})
    assert response.status_code == 400, response.json()
    assert (response.json()["code"], list(response.json()["field_errors"])) == ("before_release", ["infused_at"])
    assert not subject.infusions.exists()


@pytest.mark.django_db
def test_a_lot_number_is_registered_once(world):
    subject = apheresed_subject(**_clinical(world))
    client = api_client(world.coordinator)
    body = {"subject": subject.code, "product": "HCART19", "lot_number": "LOT-ONCE", "source": "autologous",
            "collection": f"AP-{subject.code}"}
    assert post_json(client, "/api/v1/lots/", body).status_code == 201
    again = post_json(client, "/api/v1/lots/", body)
    assert again.status_code == 409, again.json()
    assert (again.json()["code"], list(again.json()["field_errors"])) == ("duplicate_lot_number", ["lot_number"])
    assert ProductLot.objects.filter(lot_number="LOT-ONCE").count() == 1


@pytest.mark.django_db
def test_screening_sets_only_screening_characteristics(world):
    with pytest.raises(RuleViolation) as err:
        enrolment.screen_subject(trial=world.trial, site=world.site_a, screened_on=days_ago(3),
                                 by=world.coordinator, sex="F", diagnosis="b_all", status="enrolled")
    assert err.value.code == "not_a_characteristic"
    assert not world.trial.subjects.exists()


@pytest.mark.django_db
def test_confirming_eligibility_without_an_assessment_is_refused(world):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    response = post_json(api_client(world.investigator), f"/api/v1/subjects/{subject.code}/confirm-eligibility/",
                         {})
    assert response.status_code == 400
    assert response.json()["code"] == "nothing_to_confirm"


@pytest.mark.django_db
def test_a_service_account_is_bound_to_a_site(world):
    with pytest.raises(RuleViolation) as err:
        issue_service_account(trial=world.trial, sites=[], name="Nowhere", by=world.data_manager)
    assert (err.value.code, err.value.field) == ("sites_required", "sites")


@pytest.mark.django_db
def test_icans_is_not_graded_without_the_subjects_age(world):
    subject = infused_subject(**_clinical(world))
    event = safety.record_adverse_event(subject=subject, by=world.coordinator, data=safety.EventInput(
        category="icans", term="ICANS", onset_on=days_ago(4), related_to_product="definite",
        related_to_lymphodepletion="unlikely"))
    type(subject).objects.filter(pk=subject.pk).update(age_at_consent=None)  # a record from before the rule
    with pytest.raises(StateConflict) as err:
        safety.record_icans_assessment(event=event, assessed_at=at(days_ago(3)), components={}, by=world.coordinator)
    assert err.value.code == "age_unknown"
    assert not event.icansassessments.exists()


@pytest.mark.django_db
def test_a_result_sent_again_with_another_value_is_a_conflict(world, lab):
    subject = infused_subject(**_clinical(world))
    assert post_results(lab, result_row(subject, 1)).status_code == 201
    response = post_results(lab, {"results": [result_row(subject, 2), result_row(subject, 1, value="13.5")]})
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "conflict"
    assert [(row["index"], row["code"]) for row in body["rows"]] == [(1, "conflicting_result")]
    assert list(body["field_errors"]) == ["results[1].source_ref"]


@pytest.mark.django_db
def test_refused_rows_name_their_codes(world, lab):
    subject = infused_subject(**_clinical(world))
    other = infused_subject(**_clinical(world))
    malformed = post_results(lab, {"results": [result_row(subject, 1, source_ref="LIS-\x00"),
                                               result_row(subject, 2, status="maybe")]})
    assert malformed.status_code == 400
    assert malformed.json()["code"] == "rows_invalid"
    assert [(row["index"], row["code"]) for row in malformed.json()["rows"]] == [
        (0, "null_character"), (1, "unknown_status")]
    shared = post_results(lab, {"results": [result_row(subject, 3, accession_number="ACC-X"),
                                            result_row(other, 4, accession_number="ACC-X")]})  # two subjects
    assert shared.status_code == 400
    assert [(row["index"], row["code"]) for row in shared.json()["rows"]] == [(1, "accession_mismatch")]


@pytest.mark.django_db
def test_an_http_method_a_path_does_not_take_is_405(world):
    subject = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    response = api_client(world.coordinator).delete(f"/api/v1/subjects/{subject.pk}/")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert type(subject).objects.filter(pk=subject.pk).exists()


@pytest.mark.django_db
def test_a_client_that_accepts_no_json_is_406(world, lab_token):
    response = token_client(lab_token).get("/api/v1/trials/", HTTP_ACCEPT="application/xml")
    assert response.status_code == 406
    assert json.loads(response.content)["code"] == "not_acceptable"
