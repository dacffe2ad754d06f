"""The summary's loader reads results in SQL: dated on the site's calendar, only for subjects with an infusion,
ANC and platelets as one lowest value a day. Its samples give the same figures as every result read one by
one through the ORM and dated in Python (what the loader did before)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from assays.models import Result
from assays.services import ResultIn, ingest_results
from patients.timeline import local_date
from summaries.definitions import ANC, PLATELETS, QPCR
from summaries.haematology import haematology
from summaries.kinetics import kinetics
from summaries.records import Sample
from summaries.selectors import load_trial_records
from tests.factories import at, consented
from tests.summaries.conftest import DAY0, day, treated
from trials.models import Site

pytestmark = pytest.mark.django_db


def post(subject: Any, by: Any, rows: list[tuple[dt.datetime, str, str, str]]) -> None:
    ingest_results(rows=[ResultIn(source_ref=f"{subject.code}-X{n}", subject=subject.code,
                                  accession_number=f"X-{subject.code}-{when:%d%H%M}", specimen="pb",
                                  collected_at=when, analyte=analyte, value=value, unit=unit)
                         for n, (when, analyte, value, unit) in enumerate(rows)], by=by)


def every_result(subject: Any, code: str) -> list[Sample]:
    """Every current result of ``code``, read and dated as the loader did before it read in SQL."""
    zone = Site.objects.get(pk=subject.site_id).tzinfo
    rows = (Result.objects.filter(subject=subject, analyte__code=code, superseded=False)
            .exclude(status=Result.Status.CANCELLED).order_by("draw__collected_at", "pk")
            .values_list("draw__collected_at", "value", "censored"))
    return [Sample(local_date(at, zone), value, censored) for at, value, censored in rows]  # type: ignore[arg-type]


@pytest.fixture
def shanghai(trial_with_d12: Any) -> Any:
    world = trial_with_d12
    Site.objects.filter(pk=world.site_a.pk).update(time_zone="Asia/Shanghai")
    subject = treated(world, site=world.site_a, coordinator=world.coordinator, investigator=world.investigator,
                      number="A1")
    post(subject, world.coordinator, [
        (at(day(3), 1), ANC, "0.7", "10*9/L"), (at(day(3), 9), ANC, "0.3", "10*9/L"),
        (at(day(3), 17), ANC, "0.1", "10*9/L"),  # 01:00 on day 4 in Shanghai: day 4's value, not day 3's
        (at(day(5), 2), ANC, "0.6", "10*9/L"), (at(day(6), 2), ANC, "0.55", "10*9/L"),
        (at(day(8), 2), ANC, "0.9", "10*9/L"), (at(day(9), 2), ANC, "1.0", "10*9/L"),
        (at(day(3), 2), PLATELETS, "15", "10*9/L"), (at(day(3), 3), PLATELETS, "12", "10*9/L"),
        (at(day(9), 2), PLATELETS, "25", "10*9/L"), (at(day(10), 2), PLATELETS, "40", "10*9/L"),
        (at(day(2), 2), QPCR, "5000", "copies/ug"), (at(day(2), 20), QPCR, "8000", "copies/ug"),
    ])
    untreated = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    post(untreated, world.coordinator, [(at(day(3), 1), ANC, "0.4", "10*9/L")])
    return world, subject, untreated


def test_daily_lowest_counts_on_the_sites_calendar_give_the_same_haematology(shanghai):
    world, subject, _untreated = shanghai
    records = load_trial_records(user=world.data_manager, trial=world.trial)
    loaded = next(s for s in records.subjects if s.code == subject.code)
    assert [(s.on, s.value) for s in loaded.samples[ANC]] == [
        (day(0), 0.2), (day(3), 0.3), (day(4), 0.1), (day(5), 0.6), (day(6), 0.55), (day(7), 0.6), (day(8), 0.9),
        (day(9), 1.0)]
    anc, platelets = every_result(subject, ANC), every_result(subject, PLATELETS)
    assert len(anc) == 9 and len(platelets) == 5
    assert haematology(loaded.samples[ANC], loaded.samples[PLATELETS], loaded.timeline, 1) == haematology(
        anc, platelets, loaded.timeline, 1)


def test_other_analytes_keep_every_result_in_time_order(shanghai):
    world, subject, _untreated = shanghai
    loaded = next(s for s in load_trial_records(user=world.data_manager, trial=world.trial).subjects
                  if s.code == subject.code)
    qpcr = every_result(subject, QPCR)
    assert loaded.samples[QPCR] == qpcr and [s.on for s in qpcr] == [day(2), day(3), day(7), day(12)]
    lloq = None
    assert kinetics(loaded.samples[QPCR], loaded.timeline, 1, lloq) == kinetics(qpcr, loaded.timeline, 1, lloq)
    assert loaded.timeline.day0 == DAY0


def test_an_untreated_subject_is_listed_without_results(shanghai):
    world, _subject, untreated = shanghai
    records = load_trial_records(user=world.data_manager, trial=world.trial)
    loaded = next(s for s in records.subjects if s.code == untreated.code)
    assert (loaded.timeline.day0s, loaded.samples) == ((), {})
