"""Summary fixtures: a trial with a primary response visit, and treated subjects built through the services."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from assays.services import ResultIn, ingest_results
from patients.services import outcome, safety
from tests.factories import at, days_ago, infused_subject
from trials.models import Visit

DAY0 = days_ago(14)  # the factories measure, collect and release 20 to 18 days ago


def day(n: int) -> dt.date:
    return DAY0 + dt.timedelta(days=n)


def treated(world: Any, *, site: Any, coordinator: Any, investigator: Any, number: str) -> Any:
    """An infused subject with CRS and tocilizumab, a D12 CR, a last contact and ten laboratory results."""
    subject = infused_subject(trial=world.trial, site=site, coordinator=coordinator, investigator=investigator,
                              day0=DAY0, screening_number=number)
    crs = safety.record_adverse_event(subject=subject, by=coordinator, data=safety.EventInput(
        category="crs", term="Cytokine release syndrome", onset_on=day(2), related_to_product="probable",
        related_to_lymphodepletion="unlikely", resolved_on=day(5)))
    safety.record_crs_assessment(event=crs, assessed_at=at(day(2), 20), by=coordinator,
                                 components={"max_temp_c": Decimal("39.0")})
    safety.record_medication(subject=subject, drug="tocilizumab", dose=Decimal(8), dose_unit="mg/kg", route="iv",
                             given_at=at(day(2), 22), by=coordinator, adverse_event=crs)
    outcome.record_response(subject=subject, assessed_on=day(12), category="cr", by=coordinator,
                            visit=world.trial.visits.get(code="D12"), marrow_blasts_pct=Decimal("1"))
    outcome.record_follow_up(subject=subject, kind="last_contact", event_on=day(12), by=coordinator)
    results = ((7, "CAR_QPCR", "20000", "copies/ug"), (12, "CAR_QPCR", "9000", "copies/ug"),
               (0, "ANC", "0.2", "10*9/L"), (7, "ANC", "0.6", "10*9/L"), (7, "PLT", "30", "10*9/L"),
               (12, "CD19_B", "0.1", "%"), (1, "IL6", "150", "pg/mL"), (3, "IL6", "900", "pg/mL"),
               (3, "CRP", "120", "mg/L"), (3, "FERRITIN", "2500", "ng/mL"))
    rows = [ResultIn(source_ref=f"{subject.code}-{analyte}-{d}", subject=subject.code,
                     accession_number=f"A-{subject.code}-{d}-{specimen}", specimen=specimen,
                     collected_at=at(day(d), 7), analyte=analyte, value=value, unit=unit)
            for d, analyte, value, unit in results
            for specimen in ["serum" if analyte in ("IL6", "CRP", "FERRITIN") else "pb"]]
    ingest_results(rows=rows, by=coordinator)
    return subject


@pytest.fixture
def trial_with_d12(world):
    """The primary response visit is D12 here (the factories' subjects were infused 14 days ago)."""
    Visit.objects.create(trial=world.trial, code="D12", name="Day 12", target_day=12, window_before_days=2,
                         window_after_days=2, primary_response=True)
    return world


