"""One subject from screening to a second CAR-T course, through the API alone, as a site's systems do it.

The coordinator's and the investigator's own tools use their personal tokens, the laboratory its service
token; every related record is named by its code (trial, site, cohort, criteria, product, regimen and
agents, dose level, visits, lot and collection numbers), never by an id taken from the test's fixtures.
The subject has a donor-derived product (the HSCT donor's cells), a split first dose, CRS treated with
tocilizumab, a serious febrile neutropenia reported to the sponsor (initial report and follow-up), a day-28
MRD-negative remission, a relapse, a re-infusion and a day-30 response after it, laboratory results in both
courses and a last contact. Adverse events are coded through the CTCAE v5.0 dictionary as a site's system
names them (a MedDRA code, or the term in its own spelling). Everything is read back and every record's
study day (from the first infusion) and course day (from its own course's infusion) checked; the data
manager reads the SAE reports in the audit trail.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from rest_framework.test import APIClient

from patients.models import FollowUp
from tests.api.support import api_client, token_client
from tests.factories import days_ago
from trials.models import Visit
from trials.services import issue_service_account

pytestmark = pytest.mark.django_db

D1 = days_ago(140)  # day 0 of the first course
D2 = D1 + dt.timedelta(days=90)  # day 0 of the second course
SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def day(offset: int) -> dt.date:
    return D1 + dt.timedelta(days=offset)


def local(offset: int, hour: int) -> str:
    """A time on the site's clock (Asia/Shanghai), as the site's system sends it: ISO 8601 with its offset."""
    return dt.datetime.combine(day(offset), dt.time(hour), tzinfo=SHANGHAI).isoformat()


def moment(offset: int, hour: int) -> dt.datetime:
    return dt.datetime.fromisoformat(local(offset, hour))


def overdue_saes(site: Site, code: str) -> list[str]:
    """The subject's serious events whose initial report to the sponsor is past its due time."""
    rows = site.get("adverse-events/", subject=code, sae_report_overdue="true")["results"]
    return [row["term"] for row in rows]


def changed(entry: dict[str, Any], field: str) -> Any:
    """The new value of ``field`` in an audit entry."""
    (value,) = [change["new"] for change in entry["changes"] if change["field"] == field]
    return value


class Site:
    """A site's systems: the coordinator's and the investigator's tools, and the laboratory's."""

    def __init__(self, world: Any) -> None:
        self.coordinator = token_client(personal_token(world.coordinator, world.trial.code))
        self.investigator = token_client(personal_token(world.investigator, world.trial.code))
        _account, lab_token = issue_service_account(trial=world.trial, sites=[world.site_a], name="Site A LIS",
                                                    by=world.data_manager)
        self.lab = token_client(lab_token)

    @staticmethod
    def ok(response: Any, status: int = 201) -> Any:
        assert response.status_code == status, response.json()
        return response.json()

    def post(self, url: str, body: Any, *, by: APIClient | None = None, status: int = 201, **headers: str) -> Any:
        return self.ok((by or self.coordinator).post(f"/api/v1/{url}", body, format="json", headers=headers), status)

    def get(self, url: str, **params: Any) -> Any:
        return self.ok(self.coordinator.get(f"/api/v1/{url}", params), 200)


def personal_token(user: Any, trial_code: str) -> str:
    """Issued by the person, logged in with their password, for their own tools."""
    response = api_client(user).post("/api/v1/personal-tokens/", {"trial": trial_code, "name": "Site EDC bridge"},
                                     format="json")
    assert response.status_code == 201, response.json()
    return response.json()["token"]


@pytest.fixture
def site(world):
    # Protocol design, as the data manager enters it in the admin: a donor-derived product is allowed,
    # re-infusion is allowed, and the visit schedule has day-28 and day-30 response visits.
    world.trial.reinfusion_allowed = True
    world.trial.save()
    product = world.trial.products.get()
    product.allowed_sources = ["autologous", "allogeneic"]
    product.save()
    for code, target, before, after in (("D7", 7, 1, 1), ("D28", 28, 3, 3), ("D30", 30, 3, 3)):
        Visit.objects.create(trial=world.trial, code=code, name=f"Day {target}", target_day=target,
                             window_before_days=before, window_after_days=after)
    return Site(world)


def test_a_site_system_runs_a_whole_course_with_a_reinfusion_through_the_api(world, site):
    # --- the protocol, read by code ------------------------------------------------------------------
    (trial,) = site.get("trials/")["results"]
    design = {part: site.get(f"trials/{trial['code']}/{part}/")["results"] for part in (
        "sites", "cohorts", "products", "dose-levels", "lymphodepletion-regimens", "visits", "eligibility-criteria")}
    (site_code,) = [s["code"] for s in design["sites"]]  # the coordinator's own site only
    (product,) = design["products"]
    (dose_level,) = design["dose-levels"]
    (regimen,) = design["lymphodepletion-regimens"]
    assert {v["code"] for v in design["visits"]} == {"D7", "D28", "D30"}

    # --- screening to enrolment ------------------------------------------------------------------------
    subject = site.post("subjects/", {"trial": trial["code"], "site": site_code, "screened_on": str(day(-40)),
                                      "screening_number": "SCR-001", "sex": "M", "diagnosis": "b_all",
                                      "marrow_blasts_pct": "42", "prior_allo_hsct": True})
    code = subject["code"]
    assert site.get(f"subjects/by-screening-number/{site_code}/SCR-001/")["code"] == code
    site.post(f"subjects/{code}/consent/", {"version": "v2.0", "consented_on": str(day(-40)), "age_at_consent": 34},
              status=200)
    site.post(f"subjects/{code}/measurements/", {"measured_on": str(day(-39)), "height_cm": "170",
                                                 "weight_kg": "70"}, status=200)
    answers = {c["code"]: c["kind"] == "inclusion" for c in design["eligibility-criteria"]}
    site.post(f"subjects/{code}/eligibility/", {"assessed_on": str(day(-38)), "answers": answers}, status=200)
    site.post(f"subjects/{code}/confirm-eligibility/", {}, by=site.investigator, status=200)
    enrolled = site.post(f"subjects/{code}/enrol/", {"cohort": "ADULT", "enrolled_on": str(day(-35))}, status=200)
    assert enrolled["status"] == "enrolled"

    # --- the donor's cells, manufactured and released ------------------------------------------------
    site.post("donor-collections/", {"subject": code, "donor_code": "DNR-0042", "donor_type": "hsct_donor",
                                     "hla_matched": 10, "hla_total": 10, "collection_id": "DC-0001",
                                     "collected_on": str(day(-30))})
    lots = {}
    for number in ("LOT-A1", "LOT-A2"):
        lot = site.post("lots/", {"subject": code, "product": product["code"], "lot_number": number,
                                  "source": "allogeneic", "donor_collection": "DC-0001"})
        lots[number] = lot["id"]
    site.post(f"lots/{lots['LOT-A1']}/release/", {"release_date": str(day(-10)), "viability_pct": "91",
                                                  "car_positive_pct": "38", "total_viable_car_cells": "150000000",
                                                  "qc_pass": True}, status=200)

    # --- first course: lymphodepletion (doses in one request), a dose split over three days ------------
    course = site.post("lymphodepletion-courses/", {"subject": code, "regimen": regimen["code"],
                                                    "planned_infusion_on": str(day(0))})
    doses = [{"agent": p["agent"], "given_on": p["planned_on"], "administered_mg": p["planned_mg"]}
             for p in course["plan"]]
    assert len(site.post(f"lymphodepletion-courses/{course['id']}/doses/", doses)) == 6
    for fraction, (offset, cells) in enumerate(((0, "300000"), (1, "300000"), (2, "400000")), start=1):
        site.post("infusions/", {"subject": code, "lot": "LOT-A1", "dose_level": dose_level["code"],
                                 "fraction_number": fraction, "planned_fractions": 3, "cells_per_kg": cells,
                                 "infused_at": local(offset, 10)})

    # --- CRS on day 2 (as the site wrote it, coded by its MedDRA code), tocilizumab -----------------------
    crs = site.post("adverse-events/", {"subject": code, "category": "crs", "term": "CRS", "ctcae_term": "10052015",
                                        "onset_on": str(day(2)), "related_to_product": "probable",
                                        "related_to_lymphodepletion": "unlikely"})
    assessment = site.post(f"adverse-events/{crs['id']}/crs-assessments/", {
        "assessed_at": local(2, 20), "max_temp_c": "39.4", "hypotension": True})
    assert (assessment["derived_grade"], assessment["study_day"], assessment["course_day"]) == (2, 2, 2)
    site.post("medications/", {"subject": code, "adverse_event": crs["id"], "drug": "tocilizumab", "dose": "8",
                               "dose_unit": "mg/kg", "route": "iv", "given_at": local(2, 21), "indication": "CRS"})

    # --- a serious febrile neutropenia on day 5 (coded by term), reported to the sponsor -----------------
    fn = site.post("adverse-events/", {"subject": code, "category": "ctcae", "ctcae_term": "febrile neutropenia",
                                       "grade": 3, "onset_on": str(day(5)), "serious": True,
                                       "sae_hospitalisation": True, "site_aware_at": local(5, 8),
                                       "related_to_product": "possible", "related_to_lymphodepletion": "possible"})
    assert dt.datetime.fromisoformat(fn["report_due_at"]) == dt.datetime.fromisoformat(local(6, 8))  # 24 hours
    assert overdue_saes(site, code) == ["Febrile neutropenia"]
    site.post(f"adverse-events/{fn['id']}/sae-reports/", {"kind": "initial", "recipient": "sponsor",
                                                          "sent_at": local(5, 20), "reference": "SP-SAE-0017"})
    assert overdue_saes(site, code) == []
    site.post(f"adverse-events/{fn['id']}/sae-reports/", {"kind": "follow_up", "recipient": "sponsor",
                                                          "sent_at": local(9, 11), "reference": "SP-SAE-0017"})

    # --- day-28 remission, relapse, second course, day-30 response -------------------------------------
    site.post("responses/", {"subject": code, "visit": "D28", "assessed_on": str(day(28)), "category": "cr_mrd_neg",
                             "marrow_blasts_pct": "0.4", "mrd_flow_pct": "0.001"})
    site.post("responses/", {"subject": code, "assessed_on": str(day(70)), "category": "relapse",
                             "marrow_blasts_pct": "25", "antigen_status": "positive"})
    site.post(f"lots/{lots['LOT-A2']}/release/", {"release_date": str(day(75)), "viability_pct": "89",
                                                  "car_positive_pct": "35", "total_viable_car_cells": "120000000",
                                                  "qc_pass": True}, status=200)
    second = site.post("lymphodepletion-courses/", {
        "subject": code, "regimen": regimen["code"], "planned_infusion_on": str(D2),
        "doses": [{**dose, "given_on": str(dt.date.fromisoformat(dose["given_on"]) + dt.timedelta(days=90))}
                  for dose in doses]})
    assert (second["course_number"], len(second["doses"])) == (2, 6)
    site.post("infusions/", {"subject": code, "lot": "LOT-A2", "dose_level": dose_level["code"],
                             "cells_per_kg": "1000000", "infused_at": local(90, 9)})
    site.post("responses/", {"subject": code, "visit": "D30", "assessed_on": str(day(120)), "category": "cr",
                             "marrow_blasts_pct": "1.0"})

    # --- the laboratory's results across both courses ----------------------------------------------------
    draws = {"ACC-C1-D1": (1, "CRP", "85"), "ACC-C1-D7": (7, "CAR_QPCR", "52000"),
             "ACC-C2-D7": (97, "CAR_QPCR", "18000"), "ACC-C2-D28": (118, "CRP", "4.2")}
    rows = [{"source_ref": f"LIS-{accession}", "subject": code, "accession_number": accession,
             "specimen": "pb" if analyte == "CAR_QPCR" else "serum", "collected_at": local(offset, 7),
             "analyte": analyte, "value": value, "unit": "copies/ug" if analyte == "CAR_QPCR" else "mg/L"}
            for accession, (offset, analyte, value) in draws.items()]
    assert site.post("results/", {"results": rows}, by=site.lab) == {"created": 4, "unchanged": 0, "corrected": 0}

    # --- a last contact, sent twice by a retrying system: recorded once ------------------------------------
    contact = {"subject": code, "kind": "last_contact", "event_on": str(day(135)), "detail": "Seen in clinic"}
    first = site.post("follow-ups/", contact, **{"Idempotency-Key": "edc-7f3a"})
    assert site.post("follow-ups/", contact, **{"Idempotency-Key": "edc-7f3a"}) == first
    assert FollowUp.objects.filter(subject__code=code).count() == 1
    site.post("follow-ups/", {**contact, "detail": "Changed"}, status=409, **{"Idempotency-Key": "edc-7f3a"})

    # --- everything read back by subject code, each with its study day and course day --------------------
    def on_study(url: str, *keys: str) -> list[tuple]:
        rows = site.get(url, subject=code, page_size=100)["results"]
        return [(*(row[k] for k in keys), row["study_day"], row["course_number"], row["course_day"]) for row in rows]

    assert on_study("donor-collections/", "collection_id") == [("DC-0001", -30, None, None)]
    assert on_study("infusions/", "lot", "fraction_number") == [
        ("LOT-A1", 1, 0, 1, 0), ("LOT-A1", 2, 1, 1, 1), ("LOT-A1", 3, 2, 1, 2), ("LOT-A2", 1, 90, 2, 0)]
    assert on_study("adverse-events/", "ctcae_term", "term", "meddra_code", "system_organ_class", "grade") == [
        ("Cytokine release syndrome", "CRS", "10052015", "Immune system disorders", 2, 2, 1, 2),
        ("Febrile neutropenia", "Febrile neutropenia", "10016288", "Blood and lymphatic system disorders", 3,
         5, 1, 5)]
    assert overdue_saes(site, code) == []
    assert on_study("medications/", "drug") == [("tocilizumab", 2, 1, 2)]
    assert on_study("responses/", "visit", "category") == [
        ("D28", "cr_mrd_neg", 28, 1, 28), (None, "relapse", 70, 1, 70), ("D30", "cr", 120, 2, 30)]
    assert on_study("follow-ups/", "kind") == [("last_contact", 135, 2, 45)]
    assert on_study("lab-draws/", "accession_number", "visit") == [
        ("ACC-C1-D1", None, 1, 1, 1), ("ACC-C1-D7", "D7", 7, 1, 7), ("ACC-C2-D7", "D7", 97, 2, 7),
        ("ACC-C2-D28", "D28", 118, 2, 28)]
    assert sorted(on_study("results/", "analyte", "value")) == [
        ("CAR_QPCR", 18000.0, 97, 2, 7), ("CAR_QPCR", 52000.0, 7, 1, 7), ("CRP", 4.2, 118, 2, 28),
        ("CRP", 85.0, 1, 1, 1)]
    courses = site.get("lymphodepletion-courses/", subject=code)["results"]
    assert [(c["course_number"], c["regimen"], c["planned_infusion_on"]) for c in courses] == [
        (1, regimen["code"], str(D1)), (2, regimen["code"], str(D2))]
    final = site.get(f"subjects/{code}/")
    assert (final["status"], final["screening_number"]) == ("follow_up", "SCR-001")

    # --- the data manager reads who recorded each SAE report, and when it was sent -----------------------
    data_manager = token_client(personal_token(world.data_manager, trial["code"]))
    trail = site.ok(data_manager.get("/api/v1/audit-events/", {"subject": code, "table": "patients.SaeReport"}), 200)
    assert sorted((e["action"], e["user"], e["site"], changed(e, "kind"), changed(e, "recipient"),
                   dt.datetime.fromisoformat(changed(e, "sent_at"))) for e in trail["results"]) == [
        ("insert", world.coordinator.username, site_code, "follow_up", "sponsor", moment(9, 11)),
        ("insert", world.coordinator.username, site_code, "initial", "sponsor", moment(5, 20))]
