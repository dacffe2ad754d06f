"""The CSV export: one file per case report form and a data dictionary, with hand-checked values on the
course of tests/exports/conftest.py (day 0 = D1, second course on D1 + 10, a Shanghai site)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import zoneinfo
from typing import Any

import pgtrigger
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from assays.models import LabDraw, Result
from assays.services import ResultIn, ingest_results
from exports.crf import form_named, forms
from exports.formats import REGISTRY, load_all
from exports.formats.csv_format import CSV, form_chunks, generic_form_chunks
from tests.exports.conftest import D1, D2, day, files_of, scope_for
from tests.factories import at, consented

pytestmark = pytest.mark.django_db


def table(files: dict[str, bytes], name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(files[f"csv/{name}.csv"].decode("utf-8"))))


def on_study(row: dict[str, str]) -> tuple[str, str, str, str]:
    return row["study_day"], row["cdisc_study_day"], row["course_number"], row["course_day"]


@pytest.fixture
def files(course: Any) -> dict[str, bytes]:
    return files_of(CSV, scope_for(course.world))


def test_the_format_is_registered_with_one_file_per_form_and_a_dictionary(files):
    load_all()
    assert REGISTRY["csv"] is CSV
    assert set(files) == {f"csv/{f.name}.csv" for f in forms()} | {"csv/data_dictionary.csv"}
    assert files["csv/consents.csv"].startswith(b"subject,site,record,study_day,cdisc_study_day,course_number,"
                                                b"course_day,version,consented_on,withdrawn_on,withdrawal_reason\r\n")


def test_study_day_and_cdisc_day_on_both_sides_of_day_0(files):
    (consent,) = table(files, "consents")
    assert consent["consented_on"] == str(day(-15))
    assert on_study(consent) == ("-15", "-15", "", "")  # before day 0: no course, and no CDISC shift
    doses = table(files, "lymphodepletion_doses")
    assert [on_study(d) for d in doses[:2]] == [("-5", "-5", "", "")] * 2
    first, second, third = table(files, "infusions")
    assert on_study(first) == ("0", "1", "1", "0")  # day 0 is CDISC day 1: there is no day 0
    assert on_study(second) == ("1", "2", "1", "1")


def test_a_split_dose_and_a_re_infusion_course(files):
    rows = table(files, "infusions")
    assert [(r["infusion_course"], r["fraction_number"], r["planned_fractions"], r["cells_per_kg"],
             r["infused_on"], r["lot_number"]) for r in rows] == [
        ("1", "1", "2", "400000", str(D1), f"LOT-{rows[0]['subject']}"),
        ("1", "2", "2", "600000", str(day(1)), f"LOT-{rows[0]['subject']}"),
        ("2", "1", "1", "1000000", str(D2), "LOT-R2"),
    ]
    assert rows[0]["infused_at"] == f"{D1}T10:00:00Z"  # UTC, ISO 8601
    assert rows[0]["total_cells"] == "28000000"  # 400,000/kg x 70.0 kg
    assert on_study(rows[2]) == ("10", "11", "2", "0")  # study day from course 1, course day from course 2
    ld_courses = table(files, "lymphodepletion_courses")
    assert [(c["ld_course_number"], c["planned_infusion_on"]) for c in ld_courses] == [("1", str(D1)), ("2", str(D2))]


def test_a_crs_episode_with_its_assessments(files, course):
    (event,) = table(files, "adverse_events")
    assert (event["category"], event["grade"], event["grade_scale"], event["onset_on"]) == (
        "crs", "2", "ASTCT 2019", str(day(2)))
    assert on_study(event) == ("2", "3", "1", "2")
    first, second = table(files, "crs_assessments")
    assert {first["adverse_event"], second["adverse_event"]} == {str(course.crs.pk)}
    assert (first["max_temp_c"], first["hypotension"], first["derived_grade"]) == ("39.0", "false", "1")
    assert (second["max_temp_c"], second["hypotension"], second["derived_grade"]) == ("39.4", "true", "2")
    # 20:00 UTC on day 3 is 04:00 on day 4 in Shanghai: the site's date places it.
    assert second["assessed_at"] == f"{day(3)}T20:00:00Z"
    assert on_study(second) == ("4", "5", "1", "4")


def test_a_censored_result_keeps_the_text_sent_the_mark_and_the_bound(files):
    results = {r["source_ref"]: r for r in table(files, "results")}
    censored = results["LIS-1"]
    assert (censored["value_text"], censored["censored"], censored["value"], censored["canonical_unit"]) == (
        "<LLOQ", "<", "1.5", "pg/mL")
    assert on_study(censored) == ("-1", "-1", "", "")
    assert (results["LIS-2"]["value"], results["LIS-2"]["censored"]) == ("812.5", "")
    assert on_study(results["LIS-2"]) == ("7", "8", "1", "7")
    assert on_study(results["LIS-3"]) == ("12", "13", "2", "2")
    draws = {d["accession_number"]: d for d in table(files, "lab_draws")}
    assert draws["ACC-1"]["collected_at"] == f"{day(-1)}T02:00:00Z"


def test_the_data_dictionary_describes_every_column(files):
    rows = table(files, "data_dictionary")
    by_key = {(r["form"], r["variable"]): r for r in rows}
    for form in forms():
        header = files[f"csv/{form.name}.csv"].split(b"\r\n", 1)[0].decode().split(",")
        assert header == [r["variable"] for r in rows if r["form"] == form.name]
    assert by_key[("results", "censored")]["codelist"] == "<=below LLOQ | >=above ULOQ"
    assert by_key[("results", "value")]["type"] == "float"
    assert by_key[("infusions", "cdisc_study_day")]["type"] == "integer"
    assert by_key[("body_measurements", "weight_kg")]["unit"] == "kg"
    assert by_key[("infusions", "infused_at")]["type"] == "datetime"
    assert by_key[("infusions", "infused_at")]["label"].endswith("(ISO 8601, UTC)")
    assert by_key[("adverse_events", "serious")]["type"] == "boolean"
    assert "cr=CR (complete remission)" in by_key[("responses", "category")]["codelist"]


def test_another_sites_subject_never_appears(course):
    site_a = files_of(CSV, scope_for(course.world))
    assert course.other.code.encode() not in b"".join(site_a.values())
    assert [r["subject"] for r in table(site_a, "subjects")] == [course.subject.code]
    site_b = files_of(CSV, scope_for(course.world, sites=(course.world.site_b,)))
    assert [r["subject"] for r in table(site_b, "subjects")] == [course.other.code]
    assert course.subject.code.encode() not in b"".join(site_b.values())


def test_selected_subjects_only(course):
    world = course.world
    files = files_of(CSV, scope_for(world, sites=(world.site_a, world.site_b), subjects=(course.other,)))
    assert [r["subject"] for r in table(files, "subjects")] == [course.other.code]
    assert table(files, "infusions") == [] and table(files, "results") == []


def test_queries_do_not_grow_with_subjects(course):
    world = course.world

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            files_of(CSV, scope_for(world))
        return len(queries)

    one = count()
    for _ in range(4):
        consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    assert count() == one
    assert one <= len(forms()) + 1


def test_two_exports_of_unchanged_data_are_identical(course):
    assert files_of(CSV, scope_for(course.world)) == files_of(CSV, scope_for(course.world))


@pytest.mark.parametrize(("value", "text", "microsecond"), [
    (100.0, "a, \"quoted\"\nreason", 120), (-0.0, "", 120), (1.5e-05, "x", 120), (812.5, "\r", 120),
    (1e15, "", 120), (1000000000000000.5, "", 120), (-2.5e16, "", 120), (float("nan"), "", 120),
    (float("-inf"), "", 120), (None, "", 120), (2.5, ",", 0), (0.1, "\"", 654321), (7.0, "\n", 500000),
])
def test_the_results_file_written_by_postgresql_is_the_generic_one_byte_for_byte(course, value, text, microsecond):
    result = Result.objects.filter(subject__trial=course.world.trial).order_by("pk").first()
    # Stored results are append-only (assays.models.Result); the test plants awkward values in one.
    with pgtrigger.ignore("assays.Result:result_no_rewrite"):
        Result.objects.filter(pk=result.pk).update(
            value=value, correction_reason=text, superseded=True, unit_text=text,
            recorded_at=result.recorded_at.replace(microsecond=microsecond))
    form, scope = form_named("results"), scope_for(course.world)
    fast = b"".join(form_chunks(form, scope))
    assert fast == b"".join(generic_form_chunks(form, scope))
    assert fast.count(b"\r\n") >= 4
    narrowed = scope_for(course.world, sites=(course.world.site_b,))
    assert b"".join(form_chunks(form, narrowed)) == b"".join(generic_form_chunks(form, narrowed))


def test_the_results_file_is_the_generic_one_in_another_date_style_and_with_a_draw_without_results(course):
    """PostgreSQL's text of a time is ISO 8601 in the ISO date style only: in another (where the ORM cannot read
    a time, so the generic file is made first), the file is the same."""
    draw = LabDraw.objects.filter(subject=course.subject).order_by("pk").first()
    assert draw is not None
    draw.pk, draw.accession_number = None, "ACC-EMPTY"  # a draw whose results have not come yet
    draw.save()
    with pgtrigger.ignore("assays.Result:result_no_rewrite"):  # whole seconds and six digits of microseconds
        for n, result in enumerate(Result.objects.filter(subject__trial=course.world.trial).order_by("pk")[:2]):
            Result.objects.filter(pk=result.pk).update(recorded_at=result.recorded_at.replace(microsecond=n * 999_999))
    scope, form = scope_for(course.world), form_named("results")
    content = _same_file("results", scope)
    assert b"ACC-EMPTY" not in content
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL DateStyle = 'SQL, DMY'")
    assert b"".join(form_chunks(form, scope)) == content


def test_results_of_two_draws_taken_at_the_same_time_are_in_record_order(course):
    """Results are ordered by subject, collection time, then record, whatever draw they belong to: two draws
    taken at the same minute whose results were recorded alternately come out interleaved."""
    same_time = at(D1 + dt.timedelta(days=3), 9)
    rows = [ResultIn(source_ref=f"LIS-T{i}", subject=course.subject.code, accession_number=f"ACC-T{i % 2}",
                     specimen="serum", collected_at=same_time, analyte="IL6", value=str(10 + i), unit="pg/mL")
            for i in range(4)]
    for row in rows:  # one post each, so record numbers alternate between the two draws
        ingest_results(rows=[row], by=course.world.coordinator)
    content = _same_file("results", scope_for(course.world))
    planted = [r for r in table({"csv/results.csv": content}, "results") if r["source_ref"].startswith("LIS-T")]
    assert [r["source_ref"] for r in planted] == ["LIS-T0", "LIS-T1", "LIS-T2", "LIS-T3"]
    assert [r["accession_number"] for r in planted] == ["ACC-T0", "ACC-T1", "ACC-T0", "ACC-T1"]
    assert int(planted[0]["record"]) < int(planted[1]["record"]) < int(planted[2]["record"])


def _same_file(form_name: str, scope: Any) -> bytes:
    form = form_named(form_name)
    fast = b"".join(form_chunks(form, scope))
    assert fast == b"".join(generic_form_chunks(form, scope))
    return fast


@pytest.mark.parametrize(("accession", "specimen", "seconds", "microseconds"), [
    ("a, \"quoted\"\nnumber", "pb", 0, 0), ("\r", "", 0, 1), ("ACC-9", "serum", 7, 500_000)])
def test_the_lab_draws_file_written_by_postgresql_is_the_generic_one_byte_for_byte(course, accession, specimen,
                                                                                    seconds, microseconds):
    world = course.world
    draw = LabDraw.objects.filter(subject=course.subject).order_by("pk").first()
    assert draw is not None
    shanghai = zoneinfo.ZoneInfo(world.site_a.time_zone)  # the site's midnight, 16:00 UTC the day before
    at_midnight = dt.datetime.combine(D2, dt.time(0, 0, seconds, microseconds), tzinfo=shanghai)
    LabDraw.objects.filter(pk=draw.pk).update(accession_number=accession, specimen=specimen, collected_at=at_midnight)
    content = _same_file("lab_draws", scope_for(world))
    assert content.count(b"\r\n") >= 4
    _same_file("results", scope_for(world))  # the draw's columns in each of its results' lines
    (planted,) = [r for r in table({"csv/lab_draws.csv": content}, "lab_draws") if r["record"] == str(draw.pk)]
    assert planted["course_number"] == "2" and planted["course_day"] == "0"  # the re-infusion's day 0, local date
    _same_file("lab_draws", scope_for(world, sites=(world.site_b,)))
    _same_file("lab_draws", scope_for(world, sites=(world.site_a, world.site_b), subjects=(course.subject,)))
