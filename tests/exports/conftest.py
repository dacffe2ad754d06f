"""Export fixtures: a test-only format registered for the tests (and removed after), export storage in a
temporary directory, a few subjects at both sites; and a small trial for the format tests: at site A
(Asia/Shanghai) one subject with a split first CAR-T dose, a CRS episode with two assessments, a censored IL-6
result, and a second (re-infusion) course; at site B one screened subject that site A's exports must never
show."""

from __future__ import annotations

import datetime as dt
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from procrastinate.contrib.django import app

from assays.models import Analyte, AnalyteUnit
from assays.services import ResultIn, ingest_results
from exports.formats import REGISTRY, register
from exports.models import ExportJob
from exports.scope import ExportScope
from exports.storage import export_storage
from patients.models import AdverseEvent, Subject
from patients.services import safety, treatment
from tests.exports.probe import ProbeFormat, register_probes, unregister_probes
from tests.factories import at, days_ago, lymphodepleted_subject, reinfuse, screened
from trials.models import Visit

D1 = days_ago(14)  # day 0 of the first course (first fraction of a split dose)
D2 = days_ago(4)  # day 0 of the second course


def day(offset: int) -> dt.date:
    return D1 + dt.timedelta(days=offset)


@dataclass
class Course:
    world: Any
    subject: Subject
    other: Subject  # site B
    crs: AdverseEvent


def _split_dose_and_reinfusion(world: Any) -> Subject:
    subject = lymphodepleted_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                                     investigator=world.investigator, day0=D1)
    lot, level = subject.lots.get(), world.trial.dose_levels.get()
    for fraction, cells, on in ((1, Decimal(400_000), D1), (2, Decimal(600_000), day(1))):
        treatment.record_infusion(subject=subject, lot=lot, dose_level=level, cells_per_kg=cells, infused_at=at(on),
                                  by=world.coordinator, fraction_number=fraction, planned_fractions=2)
    world.trial.reinfusion_allowed = True
    world.trial.save()
    second = treatment.register_lot(subject=subject, product=world.trial.products.get(), lot_number="LOT-R2",
                                    source="autologous", collection=subject.collections.get(), by=world.coordinator)
    treatment.release_lot(lot=second, release_date=days_ago(12), viability_pct=Decimal("90"),
                          car_positive_pct=Decimal("40"), total_viable_car_cells=Decimal("1.5e8"), qc_pass=True,
                          by=world.coordinator)
    reinfuse(subject, by=world.coordinator, day0=D2)
    return subject


def _crs(world: Any, subject: Subject) -> AdverseEvent:
    event = safety.record_adverse_event(subject=subject, by=world.coordinator, data=safety.EventInput(
        category="crs", term="Cytokine release syndrome", onset_on=day(2), related_to_product="probable",
        related_to_lymphodepletion="unlikely"))
    safety.record_crs_assessment(event=event, assessed_at=at(day(2), 10), by=world.coordinator,
                                 components={"max_temp_c": Decimal("39.0")})
    # 20:00 UTC is 04:00 the next morning in Shanghai: the site's date is day 4.
    safety.record_crs_assessment(event=event, assessed_at=at(day(3), 20), by=world.coordinator,
                                 components={"max_temp_c": Decimal("39.4"), "hypotension": True})
    event.refresh_from_db()
    return event


def _labs(world: Any, subject: Subject) -> None:
    il6 = Analyte.objects.get_or_create(code="IL6", defaults={"name": "Interleukin 6", "canonical_unit": "pg/mL",
                                                              "lloq": 1.5, "uloq": 5000})[0]
    AnalyteUnit.objects.get_or_create(analyte=il6, unit="pg/mL", defaults={"factor": 1})
    rows = [
        ResultIn(source_ref="LIS-1", subject=subject.code, accession_number="ACC-1", specimen="serum",
                 collected_at=at(day(-1), 2), analyte="IL6", value="<LLOQ", unit="pg/mL"),
        ResultIn(source_ref="LIS-2", subject=subject.code, accession_number="ACC-2", specimen="serum",
                 collected_at=at(day(7), 2), analyte="IL6", value="812.5", unit="pg/mL"),
        ResultIn(source_ref="LIS-3", subject=subject.code, accession_number="ACC-3", specimen="serum",
                 collected_at=at(D2 + dt.timedelta(days=2), 2), analyte="IL6", value="40", unit="pg/mL"),
    ]
    ingest_results(rows=rows, by=world.coordinator)


@pytest.fixture
def course(world: Any) -> Course:
    Visit.objects.create(trial=world.trial, code="D7", name="Day 7", target_day=7, window_before_days=1,
                         window_after_days=1)
    subject = _split_dose_and_reinfusion(world)
    crs = _crs(world, subject)
    _labs(world, subject)
    other = screened(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b)
    return Course(world=world, subject=subject, other=other, crs=crs)


def scope_for(world: Any, *, sites: tuple[Any, ...] | None = None,
              subjects: tuple[Subject, ...] | None = None) -> ExportScope:
    sites = sites if sites is not None else (world.site_a,)
    return ExportScope(trial=world.trial, site_ids=tuple(s.pk for s in sites), user=world.data_manager,
                       cutoff=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
                       subject_ids=None if subjects is None else tuple(s.pk for s in subjects))


def files_of(fmt: Any, scope: ExportScope) -> dict[str, bytes]:
    return {f.name: b"".join(f.chunks()) for f in fmt.files(scope)}


@pytest.fixture(autouse=True)
def probe_format() -> Iterator[None]:
    """The probe formats; and a stand-in "casebook" when the real one is not installed (role rules only)."""
    added_casebook = "casebook" not in REGISTRY
    register_probes()
    if added_casebook:
        register(ProbeFormat(code="casebook", label="Casebook stand-in (tests)"))
    yield
    unregister_probes()
    if added_casebook:
        REGISTRY.pop("casebook", None)


@pytest.fixture(autouse=True)
def export_dir(settings: Any, tmp_path: Path) -> Path:
    location = tmp_path / "exports"
    settings.STORAGES = {**settings.STORAGES, "exports": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(location)}}}
    return location


@pytest.fixture
def subjects(world: Any) -> dict[str, Any]:
    """Two subjects at site A and one at site B."""
    a1 = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    a2 = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    b1 = screened(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b)
    return {"a1": a1, "a2": a2, "b1": b1}


def package(job: ExportJob) -> zipfile.ZipFile:
    return zipfile.ZipFile(export_storage().open(job.file_name, "rb"))


def stored_files(root: Path) -> list[str]:
    """Every file under the export storage, relative to it."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def run_queued_jobs() -> None:
    """Run every queued export task with a real procrastinate worker (on its own connection, as
    ``manage.py procrastinate worker`` does), until the queue is empty. Needs committed data."""
    def work() -> None:
        try:
            with app.replace_connector(app.connector.get_worker_connector()):  # type: ignore[attr-defined]
                app.run_worker(queues=["exports"], wait=False, install_signal_handlers=False, listen_notify=False)
        finally:
            connections.close_all()  # this thread's connections

    # In a thread of its own: the worker runs its own event loop, and a test session that has driven a
    # browser (Playwright's sync API) keeps one running in the main thread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(work).result()
