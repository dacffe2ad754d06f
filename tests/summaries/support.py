"""Subjects built through the API alone, by code, as a site's systems send them (like
tests/api/test_api_whole_course.py): screening to infusion, CRS/ICANS, responses, laboratory results and
follow-up, described by a ``Patient`` with every date as a study day from the first infusion."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from rest_framework.test import APIClient

from tests.api.support import api_client, token_client
from tests.factories import days_ago
from trials.models import DoseLevel, Visit
from trials.services import issue_service_account

SHANGHAI = dt.timezone(dt.timedelta(hours=8))  # the test sites' time zone (tests.factories.SiteFactory)
UNITS = {"CAR_QPCR": "copies/ug", "ANC": "10*9/L", "PLT": "10*9/L", "CD19_B": "%", "CD19_BLASTS": "%",
         "IL6": "pg/mL", "CRP": "mg/L", "FERRITIN": "ng/mL"}


@dataclass
class Toxicity:
    category: str  # crs or icans
    onset: int
    resolved: int | None
    assessment: dict[str, Any]  # ASTCT inputs of its one assessment
    drugs: tuple[str, ...] = ()


@dataclass
class Patient:
    """One subject; days are study days (day 0 = first infusion)."""

    number: str
    sex: str
    age: int
    cohort: str
    fractions: tuple[int, ...] = (1_000_000,)  # cells/kg per fraction, one a day from day 0
    donor: bool = False
    prior_hsct: bool = False
    prior_cart: bool = False
    toxicities: list[Toxicity] = field(default_factory=list)
    responses: list[tuple[int, str | None, str, dict[str, Any]]] = field(default_factory=list)  # day, visit, cat.
    results: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # analyte -> (day, value as sent)
    second_course: tuple[int, int] | None = None  # (study day of day 0, cells/kg)
    follow_ups: list[tuple[str, int]] = field(default_factory=list)  # (kind, day); death last


def design(world: Any) -> None:
    """The protocol as the data manager enters it: re-infusion and donor products allowed, D7/D28 visits with
    D28 the primary response visit, a dose level for re-infusion."""
    world.trial.reinfusion_allowed = True
    world.trial.split_dose_max_days = 3
    world.trial.save()
    product = world.trial.products.get()
    product.allowed_sources = ["autologous", "allogeneic"]
    product.save()
    Visit.objects.create(trial=world.trial, code="D7", name="Day 7", target_day=7, window_before_days=1,
                         window_after_days=1)
    Visit.objects.create(trial=world.trial, code="D28", name="Day 28", target_day=28, window_before_days=3,
                         window_after_days=3, primary_response=True)
    DoseLevel.objects.filter(trial=world.trial).update(tolerance_pct=25)


class SiteSystems:
    """A site's coordinator (personal token), investigator and laboratory (service token)."""

    def __init__(self, world: Any, *, site: Any, coordinator: Any, investigator: Any, day0: dt.date) -> None:
        self.coordinator = token_client(personal_token(coordinator, world.trial.code))
        self.investigator = token_client(personal_token(investigator, world.trial.code))
        _account, lab = issue_service_account(trial=world.trial, sites=[site], name=f"{site.code} LIS",
                                              by=world.data_manager)
        self.lab = token_client(lab)
        self.trial, self.site, self.day0 = world.trial.code, site.code, day0

    def day(self, offset: int) -> str:
        return str(self.day0 + dt.timedelta(days=offset))

    def at(self, offset: int, hour: int = 10) -> str:
        return dt.datetime.combine(self.day0 + dt.timedelta(days=offset), dt.time(hour), tzinfo=SHANGHAI).isoformat()

    def post(self, url: str, body: Any, *, by: APIClient | None = None, status: int = 201) -> Any:
        response = (by or self.coordinator).post(f"/api/v1/{url}", body, format="json")
        assert response.status_code == status, (url, response.json())
        return response.json()


def personal_token(user: Any, trial_code: str) -> str:
    response = api_client(user).post("/api/v1/personal-tokens/", {"trial": trial_code, "name": "EDC bridge"},
                                     format="json")
    assert response.status_code == 201, response.json()
    return response.json()["token"]


def build(systems: SiteSystems, patient: Patient) -> str:
    """Enter one patient through the API; returns the subject's code."""
    code = enrol(systems, patient)
    lot = manufacture(systems, patient, code, "1")
    course(systems, patient, code, lot, 0, patient.fractions)
    for tox in patient.toxicities:
        toxicity(systems, code, tox)
    post_results(systems, patient, code)
    for day, visit, category, extra in patient.responses:
        if patient.second_course and day >= patient.second_course[0] and not _reinfused(systems, code):
            reinfuse(systems, patient, code)
        systems.post("responses/", {"subject": code, "visit": visit, "assessed_on": systems.day(day),
                                    "category": category, **extra})
    if patient.second_course and not _reinfused(systems, code):
        reinfuse(systems, patient, code)
    for kind, day in patient.follow_ups:
        death = {"cause_of_death": "Disease progression"} if kind == "death" else {}
        systems.post("follow-ups/", {"subject": code, "kind": kind, "event_on": systems.day(day), **death})
    return code


def _reinfused(systems: SiteSystems, code: str) -> bool:
    rows = systems.coordinator.get("/api/v1/infusions/", {"subject": code, "page_size": 50}).json()["results"]
    return any(r["course_number"] == 2 for r in rows)


def enrol(systems: SiteSystems, p: Patient) -> str:
    subject = systems.post("subjects/", {
        "trial": systems.trial, "site": systems.site, "screened_on": systems.day(-40), "screening_number": p.number,
        "sex": p.sex, "diagnosis": "b_all", "marrow_blasts_pct": "40", "prior_allo_hsct": p.prior_hsct,
        "prior_cart": p.prior_cart, **({"prior_cart_target": "CD19", "prior_cart_scfv_origin": "murine"}
                                        if p.prior_cart else {})})
    code = subject["code"]
    systems.post(f"subjects/{code}/consent/", {"version": "v1.0", "consented_on": systems.day(-40),
                                               "age_at_consent": p.age}, status=200)
    systems.post(f"subjects/{code}/measurements/", {"measured_on": systems.day(-39), "height_cm": "150",
                                                    "weight_kg": "50"}, status=200)
    criteria = systems.coordinator.get(f"/api/v1/trials/{systems.trial}/eligibility-criteria/").json()["results"]
    answers = {c["code"]: c["kind"] == "inclusion" for c in criteria}
    systems.post(f"subjects/{code}/eligibility/", {"assessed_on": systems.day(-38), "answers": answers}, status=200)
    systems.post(f"subjects/{code}/confirm-eligibility/", {}, by=systems.investigator, status=200)
    systems.post(f"subjects/{code}/enrol/", {"cohort": p.cohort, "enrolled_on": systems.day(-35)}, status=200)
    return code


def manufacture(systems: SiteSystems, p: Patient, code: str, n: str) -> str:
    number = f"LOT-{code}-{n}"
    if p.donor:
        if n == "1":
            systems.post("donor-collections/", {"subject": code, "donor_code": f"DNR-{p.number}",
                                                "donor_type": "hsct_donor", "collection_id": f"DC-{code}",
                                                "collected_on": systems.day(-30)})
        source = {"source": "allogeneic", "donor_collection": f"DC-{code}"}
    else:
        if n == "1":
            systems.post("collections/", {"subject": code, "collection_id": f"AP-{code}",
                                          "collected_on": systems.day(-30)})
        source = {"source": "autologous", "collection": f"AP-{code}"}
    lot = systems.post("lots/", {"subject": code, "product": "HCART19", "lot_number": number, **source})
    systems.post(f"lots/{lot['id']}/release/", {"release_date": systems.day(-10 if n == "1" else 60),
                                                "viability_pct": "90", "car_positive_pct": "40",
                                                "total_viable_car_cells": "150000000", "qc_pass": True}, status=200)
    return number


def course(systems: SiteSystems, p: Patient, code: str, lot: str, day0: int, fractions: tuple[int, ...]) -> None:
    ld = systems.post("lymphodepletion-courses/", {"subject": code, "regimen": "FC",
                                                   "planned_infusion_on": systems.day(day0)})
    doses = [{"agent": d["agent"], "given_on": d["planned_on"], "administered_mg": d["planned_mg"]}
             for d in ld["plan"]]
    systems.post(f"lymphodepletion-courses/{ld['id']}/doses/", doses)
    for number, cells in enumerate(fractions, start=1):
        systems.post("infusions/", {"subject": code, "lot": lot, "dose_level": "DL1", "fraction_number": number,
                                    "planned_fractions": len(fractions), "cells_per_kg": str(cells),
                                    "infused_at": systems.at(day0 + number - 1)})


def reinfuse(systems: SiteSystems, p: Patient, code: str) -> None:
    assert p.second_course is not None
    day0, cells = p.second_course
    lot = manufacture(systems, p, code, "2")
    course(systems, p, code, lot, day0, (cells,))


def toxicity(systems: SiteSystems, code: str, tox: Toxicity) -> None:
    crs = tox.category == "crs"
    event = systems.post("adverse-events/", {
        "subject": code, "category": tox.category, "onset_on": systems.day(tox.onset),
        "term": "Cytokine release syndrome" if crs else "Immune effector cell-associated neurotoxicity",
        "related_to_product": "probable", "related_to_lymphodepletion": "unlikely",
        **({"resolved_on": systems.day(tox.resolved), "outcome": "recovered"} if tox.resolved is not None else {})})
    kind = "crs-assessments" if crs else "icans-assessments"
    systems.post(f"adverse-events/{event['id']}/{kind}/", {"assessed_at": systems.at(tox.onset, 20),
                                                           **tox.assessment})
    for drug in tox.drugs:
        systems.post("medications/", {"subject": code, "adverse_event": event["id"], "drug": drug, "dose": "8",
                                      "dose_unit": "mg/kg" if drug == "tocilizumab" else "mg", "route": "iv",
                                      "given_at": systems.at(tox.onset, 22)})


def post_results(systems: SiteSystems, p: Patient, code: str) -> None:
    rows = []
    for analyte, series in p.results.items():
        for day, value in series:
            rows.append({"source_ref": f"LIS-{code}-{analyte}-{day}", "subject": code,
                         "accession_number": f"ACC-{code}-{day}", "specimen": "pb",
                         "collected_at": systems.at(day, 7), "analyte": analyte, "value": value,
                         "unit": UNITS[analyte]})
    if rows:
        body = systems.post("results/", {"results": rows}, by=systems.lab)
        assert body["created"] == len(rows), body


def day0_for_history(days: int = 400) -> dt.date:
    return days_ago(days)
