"""Adverse events by the CTCAE v5.0 dictionary: the grade a term allows, "Other, specify", coding a free-text
term later (and the data query until then), the seeded terms, and the import of the NCI's spreadsheet."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from openpyxl import Workbook

from config.errors import DomainError
from dataqueries.checks import run_checks
from dataqueries.models import CheckCode, DataQuery
from patients.models import AdverseEvent, CtcaeTerm
from patients.services import amendments, ctcae, safety
from tests.factories import days_ago, infused_subject

pytestmark = pytest.mark.django_db

SAMPLE = Path(__file__).parent.parent / "fixtures" / "ctcae_v5_sample.csv"


def subject_of(world: Any) -> Any:
    return infused_subject(coordinator=world.coordinator, investigator=world.investigator, trial=world.trial,
                           site=world.site_a)


def event(subject: Any, by: Any, **values: Any) -> AdverseEvent:
    data: dict[str, Any] = {"category": "ctcae", "onset_on": days_ago(3), "related_to_product": "possible",
                            "related_to_lymphodepletion": "unlikely", "grade": 3, **values}
    return safety.record_adverse_event(subject=subject, by=by, data=safety.EventInput(**data))


def term(name: str) -> CtcaeTerm:
    return CtcaeTerm.objects.get(term=name)


# --- the seeded dictionary --------------------------------------------------------------------------


def test_the_seed_holds_the_car_t_terms_with_the_codes_domain_gives():
    febrile = term("Febrile neutropenia")
    assert (febrile.meddra_code, febrile.system_organ_class, febrile.allowed_grades) == (
        "10016288", "Blood and lymphatic system disorders", [3, 4, 5])
    assert term("Cytokine release syndrome").meddra_code == "10052015"
    assert term("Neutrophil count decreased").allowed_grades == [1, 2, 3, 4]  # laboratory terms stop at 4
    assert term("Hypotension").meddra_code == ""  # not verified here: the NCI import fills it
    assert not CtcaeTerm.objects.filter(allowed_grades__contains=[0]).exists()


# --- the grade a term allows ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "grade"), [("Febrile neutropenia", 2), ("Neutrophil count decreased", 5),
                                             ("Headache", 4)])
def test_a_grade_the_term_does_not_define_is_refused_on_the_grade(world, name, grade):
    subject = subject_of(world)
    with pytest.raises(DomainError) as err:
        event(subject, world.coordinator, ctcae_term=term(name), grade=grade)
    assert (err.value.code, err.value.field) == ("grade_not_allowed", "grade")
    assert term(name).grades_label() in err.value.message
    assert not AdverseEvent.objects.filter(subject=subject).exists()


def test_grade_zero_is_never_an_adverse_event_coded_or_not(world):
    subject = subject_of(world)
    for coded in (term("Headache"), None):
        with pytest.raises(DomainError) as err:
            event(subject, world.coordinator, ctcae_term=coded, term="Headache", grade=0)
        assert (err.value.code, err.value.field) == ("grade_not_allowed", "grade")
    assert not AdverseEvent.objects.filter(subject=subject).exists()


def test_a_coded_event_takes_its_term_code_and_organ_class_from_the_dictionary(world):
    recorded = event(subject_of(world), world.coordinator, ctcae_term=term("Febrile neutropenia"), grade=3)
    assert (recorded.term, recorded.meddra_code, recorded.system_organ_class) == (
        "Febrile neutropenia", "10016288", "Blood and lymphatic system disorders")


def test_check_ctcae_grade_accepts_every_allowed_grade():
    for grade in term("Febrile neutropenia").allowed_grades:
        ctcae.check_ctcae_grade(term=term("Febrile neutropenia"), grade=grade)


# --- "Other, specify" and uncoded terms -------------------------------------------------------------


def test_other_specify_takes_a_verbatim_term_and_its_organ_class(world):
    other = term("Blood and lymphatic system disorders - Other, specify")
    subject = subject_of(world)
    with pytest.raises(DomainError) as err:
        event(subject, world.coordinator, ctcae_term=other)
    assert (err.value.code, err.value.field) == ("verbatim_term_required", "term")
    recorded = event(subject, world.coordinator, ctcae_term=other, term="Hypogammaglobulinaemia", grade=2)
    assert (recorded.term, recorded.system_organ_class) == ("Hypogammaglobulinaemia",
                                                            "Blood and lymphatic system disorders")


def test_other_specify_without_an_organ_class_needs_one(world):
    other = CtcaeTerm.objects.create(term="Other, specify", allowed_grades=[1, 2, 3, 4, 5])
    subject = subject_of(world)
    with pytest.raises(DomainError) as err:
        event(subject, world.coordinator, ctcae_term=other, term="Cytopenia, unspecified")
    assert (err.value.code, err.value.field) == ("system_organ_class_required", "system_organ_class")
    recorded = event(subject, world.coordinator, ctcae_term=other, term="Cytopenia, unspecified",
                     system_organ_class="Blood and lymphatic system disorders")
    assert recorded.system_organ_class == "Blood and lymphatic system disorders"


def test_an_event_names_a_term_one_way_or_the_other(world):
    with pytest.raises(DomainError) as err:
        event(subject_of(world), world.coordinator, term="  ")
    assert (err.value.code, err.value.field) == ("term_required", "ctcae_term")


def test_a_free_text_term_raises_a_data_query_until_it_is_coded(world):
    subject = subject_of(world)
    uncoded = event(subject, world.coordinator, term="Neutropenia", grade=4)
    run_checks(world.trial)
    query = DataQuery.objects.get(check_code=CheckCode.AE_UNCODED, object_id=uncoded.pk)
    assert query.field_name == "ctcae_term" and query.status == DataQuery.Status.OPEN
    assert "Neutropenia" in query.messages.get().text

    amendments.amend_record(record=uncoded, changes={"ctcae_term": term("Neutrophil count decreased")},
                            reason="Coded to CTCAE v5.0", by=world.coordinator)
    uncoded.refresh_from_db()
    assert (uncoded.term, uncoded.meddra_code, uncoded.system_organ_class) == (
        "Neutropenia", "10029366", "Investigations")  # the reported term stays as reported
    run_checks(world.trial)
    query.refresh_from_db()
    assert query.status == DataQuery.Status.CLOSED and query.auto_resolved


def test_coding_later_to_a_term_that_refuses_the_grade_is_refused(world):
    uncoded = event(subject_of(world), world.coordinator, term="Neutropenic fever", grade=2)
    with pytest.raises(DomainError) as err:
        amendments.amend_record(record=uncoded, changes={"ctcae_term": term("Febrile neutropenia")},
                                reason="Coded", by=world.coordinator)
    assert (err.value.code, err.value.field) == ("grade_not_allowed", "grade")
    uncoded.refresh_from_db()
    assert uncoded.ctcae_term is None


# --- the NCI spreadsheet --------------------------------------------------------------------------


def sample_rows() -> list[list[str]]:
    with SAMPLE.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def as_xlsx(rows: list[list[Any]], path: Path) -> Path:
    workbook = Workbook()
    for row in rows:
        workbook.active.append(row)
    workbook.save(path)
    return path


def test_import_from_the_nci_csv_adds_and_updates_terms(capsys):
    before = CtcaeTerm.objects.count()
    call_command("import_ctcae", str(SAMPLE))
    assert "0 created, 3 updated, 0 unchanged" in capsys.readouterr().out
    assert CtcaeTerm.objects.count() == before  # all three were seeded: matched by name, completed
    hypotension = term("Hypotension")
    assert (hypotension.meddra_code, hypotension.allowed_grades) == ("10021097", [1, 2, 3, 4, 5])
    headache = term("Headache")
    assert headache.allowed_grades == [1, 2, 3] and headache.definition.startswith("A disorder characterized")
    call_command("import_ctcae", str(SAMPLE))  # again: nothing changes
    assert "0 created, 0 updated, 3 unchanged" in capsys.readouterr().out


def test_import_from_the_nci_xlsx_reads_numeric_codes_and_dashes(tmp_path, capsys):
    rows: list[list[Any]] = [row[:9] for row in sample_rows()]
    rows.append([10099999.0, "Nervous system disorders", "Sample term", "Mild", "-", "-", "-", "-", ""])
    call_command("import_ctcae", str(as_xlsx(rows, tmp_path / "CTCAE_v5.0.xlsx")))
    assert "created" in capsys.readouterr().out
    sample = term("Sample term")
    assert (sample.meddra_code, sample.allowed_grades) == ("10099999", [1])


def test_a_file_not_in_the_nci_layout_is_refused_and_changes_nothing(tmp_path):
    before = list(CtcaeTerm.objects.order_by("pk").values_list("term", "allowed_grades"))
    with pytest.raises(CommandError, match="Missing columns: MedDRA SOC, CTCAE Term"):
        call_command("import_ctcae", str(as_xlsx([["MedDRA Code", "Term"], ["1", "x"]], tmp_path / "bad.xlsx")))
    rows = sample_rows()
    rows.append(["10099998", "Nervous system disorders", "Gradeless", "-", "-", "-", "-", "-", "", ""])
    bad = tmp_path / "bad.csv"
    with bad.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises(CommandError, match="Gradeless defines no grade"):
        call_command("import_ctcae", str(bad))
    assert list(CtcaeTerm.objects.order_by("pk").values_list("term", "allowed_grades")) == before


def test_read_ctcae_file_names_the_refusal():
    with pytest.raises(DomainError) as err:
        ctcae.read_ctcae_file(Path("terms.txt"))
    assert (err.value.code, err.value.field) == ("invalid_ctcae_file", "file")


# --- the admin ----------------------------------------------------------------------------------------


def test_the_admin_offers_terms_by_autocomplete_to_whoever_enters_events(world, login):
    client = login(world.coordinator)
    page = client.get(reverse("admin:patients_adverseevent_add"))
    assert page.status_code == 200
    assert "admin-autocomplete" in page.content.decode()
    found = client.get(reverse("admin:autocomplete"), {"term": "10016288", "app_label": "patients",
                                                       "model_name": "adverseevent", "field_name": "ctcae_term"})
    assert found.status_code == 200
    assert [r["text"] for r in found.json()["results"]] == ["Febrile neutropenia (10016288)"]


def test_a_crs_event_coded_by_its_ctcae_term_alone_takes_the_terms_name(world):
    subject = subject_of(world)
    crs = event(subject, world.coordinator, category="crs", grade=None, term="",
                ctcae_term=term("Cytokine release syndrome"))
    assert (crs.term, crs.meddra_code, crs.system_organ_class) == (
        "Cytokine release syndrome", "10052015", "Immune system disorders")
    with pytest.raises(DomainError) as err:
        event(subject, world.coordinator, category="icans", grade=None, term=" ")
    assert (err.value.code, err.value.field) == ("term_required", "term")
