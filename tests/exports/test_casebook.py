"""The PDF casebook: one subject's forms in course order, with study and course days, each record's audit
trail, signatures with their validity and open queries; site scoping; the admin's download, audited.

The subject has a split first infusion (three fractions), CRS with an ASTCT assessment treated with
tocilizumab, laboratory results on both sides of day 0, a corrected response, and a second course.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import msgspec
import pghistory
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pypdf import PdfReader
from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import BaseDocTemplate, Frame, PageTemplate, Paragraph

from assays.models import LabDraw
from assays.services import ResultIn, ingest_results
from audit.models import AuditExport
from dataqueries.services import raise_query
from exports.casebook import content, pdf
from exports.formats import REGISTRY, load_all
from exports.formats.casebook import casebook_pdf
from exports.scope import ExportScope, readable_site_ids
from patients.models import AdverseEvent, ResponseAssessment, Subject
from patients.services import amendments, outcome, safety, treatment
from signatures.services import sign
from tests.factories import PASSWORD, at, days_ago, infused_subject, lymphodepleted_subject

pytestmark = pytest.mark.django_db

D1 = days_ago(12)  # day 0 of the first course
D2 = D1 + dt.timedelta(days=9)  # day 0 of the second course
CUTOFF = dt.datetime(2030, 1, 2, 3, 4, tzinfo=dt.UTC)


def day(offset: int) -> dt.date:
    return D1 + dt.timedelta(days=offset)


def pdf_text(data: bytes) -> str:
    """The text of every page, with runs of white space made single spaces."""
    reader = PdfReader(io.BytesIO(data))
    return re.sub(r"\s+", " ", " ".join(page.extract_text() for page in reader.pages))


def page_count(data: bytes) -> int:
    return len(PdfReader(io.BytesIO(data)).pages)


def scope_for(user: Any, trial: Any, subject_ids: tuple[int, ...] | None = None) -> ExportScope:
    return ExportScope(trial=trial, site_ids=readable_site_ids(user, trial), user=user, cutoff=CUTOFF,
                       subject_ids=subject_ids)


def casebook(subject: Subject, user: Any) -> str:
    return pdf_text(casebook_pdf(scope_for(user, subject.trial), subject.pk))


def split_course(subject: Subject, by: Any) -> None:
    """Three fractions of the first lot on days 0, 1 and 2 (the factory's subject is lymphodepleted)."""
    lot, level = subject.lots.get(), subject.trial.dose_levels.get()
    for fraction, cells in enumerate((300_000, 300_000, 400_000), start=1):
        treatment.record_infusion(subject=subject, lot=lot, dose_level=level, cells_per_kg=Decimal(cells),
                                  infused_at=at(day(fraction - 1)), fraction_number=fraction, planned_fractions=3,
                                  by=by)


def crs_episode(subject: Subject, by: Any) -> AdverseEvent:
    event = safety.record_adverse_event(subject=subject, by=by, data=safety.EventInput(
        category="crs", term="Cytokine release syndrome", onset_on=day(2), related_to_product="probable",
        related_to_lymphodepletion="unlikely"))
    safety.record_crs_assessment(event=event, assessed_at=at(day(2), 12), by=by,
                                 components={"max_temp_c": Decimal("39.4"), "hypotension": True})
    safety.record_medication(subject=subject, drug="tocilizumab", dose=Decimal("8"), dose_unit="mg/kg", route="iv",
                             given_at=at(day(2), 13), indication="CRS", adverse_event=event, by=by)
    return event


def lab(subject: Subject, by: Any, accession: str, on: dt.date, analyte: str, value: str, unit: str) -> None:
    ingest_results(rows=[ResultIn(f"LIS-{accession}", subject.code, accession, "pb", at(on, 1), analyte, value,
                                  unit)], by=by)


def second_course(subject: Subject, by: Any) -> None:
    from tests.factories import reinfuse

    subject.trial.reinfusion_allowed = True
    subject.trial.save()
    lot = treatment.register_lot(subject=subject, product=subject.trial.products.get(), lot_number="LOT-R2",
                                 source="autologous", collection=subject.collections.get(), by=by)
    treatment.release_lot(lot=lot, release_date=day(3), viability_pct=Decimal("90"), car_positive_pct=Decimal("40"),
                          total_viable_car_cells=Decimal("1.5e8"), qc_pass=True, by=by)
    subject.refresh_from_db()
    reinfuse(subject, by=by, day0=D2)


@pytest.fixture
def course(world: Any) -> Subject:
    """A subject through a split infusion, CRS, a day-5 response, labs at day -1 and 7, and a second course."""
    by = world.coordinator
    subject = lymphodepleted_subject(coordinator=by, investigator=world.investigator, day0=D1, site=world.site_a,
                                     trial=world.trial, screening_number="SCR-017")
    split_course(subject, by)
    crs_episode(subject, by)
    outcome.record_response(subject=subject, assessed_on=day(5), category="cr", marrow_blasts_pct=Decimal("3.0"),
                            by=by)
    lab(subject, by, "ACC-PRE", day(-1), "CRP", "12", "mg/L")
    lab(subject, by, "ACC-D7", day(7), "CAR_QPCR", "52000", "copies/ug")
    second_course(subject, by)
    lab(subject, by, "ACC-C2", D2 + dt.timedelta(days=1), "CRP", "30", "mg/L")
    subject.refresh_from_db()
    return subject


# --- content -----------------------------------------------------------------------------------------


def test_cover_names_trial_site_zone_subject_state_lock_and_cut_off(world: Any, course: Subject) -> None:
    text = casebook(course, world.data_manager)
    assert f"Casebook of subject {course.code}" in text
    assert f"{world.trial.code}: {world.trial.title}" in text
    assert "Asia/Shanghai" in text
    assert "SCR-017" in text
    assert "Follow-up" in text  # the state
    assert "Open: not frozen or locked" in text
    assert "2030-01-02 11:04 UTC+08:00" in text  # the scope's cut-off on the site's clock
    assert f"course 1: {D1.isoformat()}, course 2: {D2.isoformat()}" in text
    assert f"Casebook {course.code} · trial {world.trial.code} · site SA" in text  # the running header


def test_forms_come_in_course_order(world: Any, course: Subject) -> None:
    text = casebook(course, world.data_manager)
    titles = ["Enrolment (1)", "Informed consent (1)", "Height and weight (1)", "Eligibility (1)", "Status history",
              "Apheresis collections (1)", "Donor collections (0)", "Product lots (2)", "Bridging therapy (0)",
              "Lymphodepletion (2)", "CAR-T infusions (4)", "Adverse events (1)", "Medications (1)",
              "Response assessments (1)", "Follow-up (0)", "Laboratory (3)", "Signatures (0)",
              "Open data queries (0)"]
    # Each title after the contents page (which lists them without the count in brackets).
    body = text[text.index("Enrolment (1)"):]
    positions = [body.index(title) for title in titles]
    assert positions == sorted(positions)


def test_study_day_and_course_day_on_both_sides_of_day_0(world: Any, course: Subject) -> None:
    text = casebook(course, world.data_manager)
    # Lymphodepletion (days -5 to -3: a study day, no course yet) and the lab draw the day before day 0.
    assert f"date {day(-1).isoformat()} · study day -1 · —" in text
    assert re.search(rf"{day(-5).isoformat()}", text)
    # Day 0 and after: the CRS event on day 2 of course 1; the second course's draw on its day 1 (study day 10).
    assert f"date {day(2).isoformat()} · study day 2 · course 1, day 2" in text
    assert f"date {(D2 + dt.timedelta(days=1)).isoformat()} · study day 10 · course 2, day 1" in text


def test_split_infusion_and_reinfusion_course(world: Any, course: Subject) -> None:
    text = casebook(course, world.data_manager)
    for fraction, offset in ((1, 0), (2, 1), (3, 2)):
        assert re.search(rf"infusion #\d+: date {day(offset).isoformat()} · study day {offset} · course 1, "
                         rf"day {offset} Lot Lot LOT-\S+ \(released\) Dose level DL1 \(1\.0 × 10\^6 cells/kg\) "
                         rf"Course number 1 Fraction number {fraction} Planned fractions 3", text)
    assert f"date {D2.isoformat()} · study day 9 · course 2, day 0" in text
    assert "Lot LOT-R2" in text
    assert text.count("Course number 2") == 2  # the second lymphodepletion course and the re-infusion


def test_crs_assessment_with_its_components_and_grade(world: Any, course: Subject) -> None:
    text = casebook(course, world.data_manager)
    assert "CRS assessments (ASTCT) (1)" in text
    assert "39.4" in text
    assert "Cytokine release syndrome" in text
    assert f"{day(2).isoformat()} 20:00 UTC+08:00" in text  # assessed at 12:00 UTC, on the site's clock
    assert "Tocilizumab" in text


def test_icans_assessment_with_its_ice_score(world: Any, course: Subject) -> None:
    event = safety.record_adverse_event(subject=course, by=world.coordinator, data=safety.EventInput(
        category="icans", term="ICANS", onset_on=day(4), related_to_product="probable",
        related_to_lymphodepletion="unlikely"))
    items = dict.fromkeys(("orientation_year", "orientation_month", "orientation_city", "orientation_hospital",
                           "follows_commands", "writes_sentence", "counts_backwards"), True)
    safety.record_icans_assessment(event=event, assessed_at=at(day(4), 2), by=world.coordinator,
                                   components={**items, "orientation_city": False, "objects_named": 3})
    text = casebook(course, world.data_manager)
    assert "ICANS assessments (ASTCT) (1)" in text
    assert f"date {day(4).isoformat()} · study day 4 · course 1, day 4" in text
    assert "ICE score 9" in text


def test_an_amended_value_shows_old_and_new_with_the_reason(world: Any, course: Subject) -> None:
    response = ResponseAssessment.objects.get(subject=course)
    with pghistory.context(user=world.coordinator.pk):  # as the admin's and the API's middleware record it
        amendments.amend_record(record=response, changes={"marrow_blasts_pct": Decimal("4.5")},
                                reason="Transcription error on the marrow report", by=world.coordinator)
    text = casebook(course, world.data_manager)
    assert re.search(r"coord_a \(Test User\d+\) response assessment #\d+ changed marrow blasts pct: 3\.00 -> 4\.50 "
                     r"Transcription error on the marrow report", text)


def test_a_changed_reference_is_named(world: Any, course: Subject) -> None:
    """The trail stores a foreign key's id; the casebook names the user or design record it points to."""
    text = casebook(course, world.data_manager)
    cohort = world.trial.cohorts.get(code="ADULT")
    assert f"cohort: — -> ADULT Adult (#{cohort.pk})" in text
    assert f"confirmed by: — -> inv_a (#{world.investigator.pk})" in text


def test_a_signature_is_valid_then_invalid_after_a_change(world: Any, course: Subject) -> None:
    sign(subject=course, meaning="review", password=PASSWORD, by=world.investigator)
    text = casebook(course, world.data_manager)
    assert "Signatures (1)" in text
    assert "Test User" in text and "Review" in text and "casebook (all forms)" in text
    assert re.search(r"Review casebook \(all forms\) valid", text)

    response = ResponseAssessment.objects.get(subject=course)
    amendments.amend_record(record=response, changes={"marrow_blasts_pct": Decimal("4.5")}, reason="Typo",
                            by=world.coordinator)
    text = casebook(course, world.data_manager)
    assert "invalid — changed since signed" in text
    assert not re.search(r"Review casebook \(all forms\) valid", text)


def test_an_open_query_is_listed_with_its_thread(world: Any, course: Subject) -> None:
    response = ResponseAssessment.objects.get(subject=course)
    raise_query(subject=course, record=response, field="marrow_blasts_pct",
                text="Please confirm the marrow blast count", by=world.data_manager)
    text = casebook(course, world.data_manager)
    assert "Open data queries (1)" in text
    assert "field marrow_blasts_pct: Open" in text
    assert "Please confirm the marrow blast count" in text
    assert "Raised" in text


def test_lock_state_on_the_cover(world: Any, course: Subject) -> None:
    from locking.services import lock_scope

    lock_scope(trial=world.trial, level="freeze", reason="Interim analysis", by=world.data_manager)
    text = casebook(course, world.data_manager)
    assert "Frozen (no data entry or change): trial" in text
    assert "Interim analysis" in text


# --- reproducibility, pagination, queries ---------------------------------------------------------------


def test_the_same_data_give_identical_bytes(world: Any, course: Subject) -> None:
    scope = scope_for(world.data_manager, world.trial)
    assert casebook_pdf(scope, course.pk) == casebook_pdf(scope, course.pk)
    other_user = scope_for(world.monitor, world.trial)  # the exporting user is not in the file
    assert casebook_pdf(other_user, course.pk) == casebook_pdf(scope, course.pk)


def _more_results(subject: Subject, by: Any, draws: int) -> None:
    for n in range(draws):
        lab(subject, by, f"ACC-X{n:03d}", day(3), "CRP", str(10 + n), "mg/L")


def test_a_long_casebook_paginates_with_page_n_of_m(world: Any) -> None:
    subject = infused_subject(coordinator=world.coordinator, investigator=world.investigator, day0=D1,
                              site=world.site_a, trial=world.trial)
    scope = scope_for(world.data_manager, world.trial)
    short = page_count(casebook_pdf(scope, subject.pk))
    _more_results(subject, world.coordinator, 60)
    data = casebook_pdf(scope, subject.pk)
    pages = page_count(data)
    assert pages > short + 3
    text = pdf_text(data)
    assert f"page 1 of {pages}" in text and f"page {pages} of {pages}" in text
    assert text.count(f"Casebook {subject.code} · trial") == pages  # the header on every page


def test_a_value_longer_than_a_page_is_split_across_pages(world: Any, course: Subject) -> None:
    detail = " ".join(f"Clinic note line {n}." for n in range(1500))
    outcome.record_follow_up(subject=course, kind="last_contact", event_on=day(10), detail=detail, by=world.coordinator)
    text = casebook(course, world.data_manager)
    assert "Clinic note line 0." in text and "Clinic note line 1499." in text


class KeptPagesCanvas(Canvas):
    """The footer canvas as it was: every page's whole state kept until the number of pages is known."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pages: list[dict[str, Any]] = []

    def showPage(self) -> None:  # noqa: N802
        self._pages.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._pages)
        for number, state in enumerate(self._pages, start=1):
            self.__dict__.update(state)
            self.setFont(pdf.FONT, 7.5)
            self.drawRightString(pdf.PAGE[0] - pdf.MARGIN, pdf.MARGIN / 2, f"page {number} of {total}")
            super().showPage()
        super().save()


def _draws_of_results(subject: Subject, by: Any, draws: int, per_draw: int) -> None:
    """``draws`` draws (two at the same time, to test the tie on the primary key) of ``per_draw`` results."""
    analytes = (("CRP", "mg/L"), ("FERRITIN", "ng/mL"), ("IL6", "pg/mL"))
    rows = [ResultIn(f"LIS-B{d}-{r}", subject.code, f"ACC-B{d:02d}", "pb", at(day(3 + d // 2), 6), *analytes[r % 3][:1],
                     str(10 + d + r), analytes[r % 3][1]) for d in range(draws) for r in range(per_draw)]
    ingest_results(rows=rows, by=by)
    # A correction (supersedes a result: an update with its reason in the trail), then a later draw.
    ingest_results(rows=[msgspec.structs.replace(rows[per_draw + 1], value="99", correction_reason="Re-run")], by=by)


def test_laboratory_draws_read_as_printed_give_the_bytes_of_the_whole_casebook_at_once(
        world: Any, course: Subject, monkeypatch: pytest.MonkeyPatch) -> None:
    """The streamed lab form, across many cursor fetches, the flowables made as laid out and the compressed
    waiting pages give the same file as everything loaded and laid out at once, in the same queries."""
    _draws_of_results(course, world.coordinator, draws=7, per_draw=5)
    monkeypatch.setattr(content, "STREAM_CHUNK", 2)  # every few draws and results, another fetch

    def built(forms: tuple[content.FormSpec, ...]) -> tuple[bytes, int]:
        with CaptureQueriesContext(connection) as queries:
            data = pdf.render_casebook(content.load_casebook(subject_id=course.pk, cutoff=CUTOFF, forms=forms))
        return data, len(queries)

    streamed, queries = built(content.FORMS)
    at_once = tuple(dataclasses.replace(spec, streamed=False) for spec in content.FORMS)
    monkeypatch.setattr(pdf, "NumberedCanvas", KeptPagesCanvas)
    monkeypatch.setattr(pdf, "Story", list)
    assert built(at_once) == (streamed, queries)
    text = pdf_text(streamed)
    assert "Laboratory (10)" in text  # the three of the fixture and seven
    assert text.count("Results (5)") == 6 and text.count("Results (6)") == 1  # the corrected one's draw
    positions = [text.index(f"lab draw #{pk}") for pk in
                 LabDraw.objects.filter(subject=course).order_by("collected_at", "pk").values_list("pk", flat=True)]
    assert positions == sorted(positions)
    assert re.search(r"result #\d+ changed superseded: false -> true Re-run", text)


def test_a_story_made_as_laid_out_gives_the_bytes_of_the_whole_list() -> None:
    """Splits put back at the front, and runs of flowables kept with the next one (grouped by ReportLab from
    the front of its list), lay out as they do from the whole list."""
    kept = ParagraphStyle("kept", parent=pdf.styles()["h2"], keepWithNext=1)

    def flowables() -> Iterator[Any]:
        for n in range(40):
            yield from (Paragraph(f"Heading {n}", kept), Paragraph(f"Subheading {n}", kept),
                        pdf.grid(["#", "Value"], [(str(i), f"value {n}.{i} " * (i % 7)) for i in range(n)]))

    def built(story: list[Any]) -> bytes:
        buffer = io.BytesIO()
        doc = BaseDocTemplate(buffer, pagesize=pdf.PAGE, invariant=1)
        doc.addPageTemplates([PageTemplate(id="page", frames=[Frame(40, 40, pdf.WIDTH, 400, id="body")])])
        doc.build(story, canvasmaker=pdf.NumberedCanvas)
        return buffer.getvalue()

    assert built(pdf.Story(flowables())) == built(list(flowables()))


def test_queries_do_not_grow_with_the_records(world: Any, course: Subject) -> None:
    scope = scope_for(world.data_manager, world.trial)

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            casebook_pdf(scope, course.pk)
        return len(queries)

    before = count()
    _more_results(course, world.coordinator, 5)
    event = AdverseEvent.objects.get(subject=course)
    for hour in (14, 16):
        safety.record_crs_assessment(event=event, assessed_at=at(day(2), hour), by=world.coordinator,
                                     components={"max_temp_c": Decimal("38.9")})
    assert count() == before


# --- the format and its scope ----------------------------------------------------------------------------


def test_one_file_per_subject_in_scope_and_never_another_sites(world: Any, course: Subject) -> None:
    load_all()
    other = infused_subject(coordinator=world.coordinator_b, investigator=world.investigator_b, day0=D1,
                            site=world.site_b, trial=world.trial)
    fmt = REGISTRY["casebook"]
    assert (fmt.code, fmt.label) == ("casebook", "PDF casebook")

    site_a_files = fmt.files(scope_for(world.coordinator, world.trial))
    assert [f.name for f in site_a_files] == [f"casebooks/{course.code}.pdf"]
    (only,) = site_a_files
    assert only.media_type == "application/pdf"
    data = b"".join(only.chunks())
    assert data.startswith(b"%PDF") and other.code not in pdf_text(data)

    every = fmt.files(scope_for(world.data_manager, world.trial))
    assert sorted(f.name for f in every) == sorted([f"casebooks/{course.code}.pdf", f"casebooks/{other.code}.pdf"])
    selected = fmt.files(scope_for(world.data_manager, world.trial, subject_ids=(other.pk,)))
    assert [f.name for f in selected] == [f"casebooks/{other.code}.pdf"]


# --- the admin's download ------------------------------------------------------------------------------


def _url(subject: Subject) -> str:
    return f"/admin/patients/subject/{subject.pk}/casebook/"


def test_admin_subject_page_links_the_casebook(world: Any, course: Subject, login: Any) -> None:
    page = login(world.coordinator).get(f"/admin/patients/subject/{course.pk}/change/")
    assert page.status_code == 200
    assert _url(course) in page.content.decode()
    assert "Casebook (PDF)" in page.content.decode()


def test_admin_download_is_the_subjects_pdf_and_is_audited(world: Any, course: Subject, login: Any) -> None:
    before = timezone.now()
    response = login(world.monitor).get(_url(course))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert f'filename="{course.code}.pdf"' in response["Content-Disposition"]
    data = b"".join(response.streaming_content) if response.streaming else response.content
    assert f"Casebook of subject {course.code}" in pdf_text(data)
    export = AuditExport.objects.get(format="casebook")
    assert export.exported_by == world.monitor and export.exported_at >= before
    assert export.filters == {"trial": world.trial.code, "site": "SA", "subject": course.code}


def test_admin_download_of_another_sites_subject_is_404_and_not_audited(world: Any, course: Subject,
                                                                        login: Any) -> None:
    assert login(world.coordinator_b).get(_url(course)).status_code == 404
    assert login(world.coordinator_b).get("/admin/patients/subject/999999999/casebook/").status_code == 404
    assert not AuditExport.objects.filter(format="casebook").exists()
