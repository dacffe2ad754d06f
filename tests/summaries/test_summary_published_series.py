"""A published CAR-T case series entered patient by patient through the API, and the summary reproducing the
figures the paper reports.

Maude SL, Frey N, Shaw PA, et al. Chimeric antigen receptor T cells for sustained remissions in leukemia.
N Engl J Med 2014;371:1507-17 (CTL019, tisagenlecleucel; relapsed/refractory ALL). Reported: 30 patients, 25
children and young adults (5 to 22 years) and 5 adults (26 to 60 years); 18 had relapsed after allogeneic
stem-cell transplantation; complete remission at one month in 27 of 30 (90%); every patient had cytokine-release
syndrome, severe in 27% (8 of 30).

Only the paper's reported figures are asserted. Per-patient values it does not report are placeholders chosen
to be consistent with them (which of the patients had a transplant or severe CRS, exact ages other than the
extremes, sex); CRS grades are entered as ASTCT components (severe: grade 3 or 4), a grading the paper predates.
The survival estimates (6-month EFS 67%, OS 78%) are not reproduced: they need per-patient follow-up times the
paper does not list.
"""

from __future__ import annotations

import pytest

from tests.summaries.support import Patient, SiteSystems, Toxicity, build, day0_for_history, design

pytestmark = pytest.mark.django_db

MILD = {"max_temp_c": "39.0"}  # ASTCT grade 1
MODERATE = {"max_temp_c": "39.5", "hypotension": True}  # grade 2
SEVERE = {"max_temp_c": "40.0", "hypotension": True, "vasopressors": ["norepinephrine"]}  # grade 3
LIFE_THREATENING = {"max_temp_c": "40.1", "hypotension": True, "vasopressors": ["norepinephrine", "epinephrine"]}

CHILD_AGES = (5, 6, 7, 7, 8, 9, 9, 10, 10, 11, 11, 12, 13, 14, 14, 14, 15, 16, 17, 18, 19, 20, 21, 22, 22)
ADULT_AGES = (26, 37, 47, 55, 60)


def patient(n: int, age: int) -> Patient:
    """Patient n (1-30): 1-18 post-transplant; 1-27 in CR at day 28; CRS in all, 6 grade 3 and 2 grade 4."""
    crs = SEVERE if n in (3, 7, 11, 15, 19, 23) else LIFE_THREATENING if n in (26, 29) else (
        MILD if n % 2 else MODERATE)
    return Patient(f"CHP-{n:02d}", "F" if n % 2 else "M", age, "PED" if age < 18 else "ADULT",
                   prior_hsct=n <= 18, toxicities=[Toxicity("crs", 1 + n % 4, 4 + n % 6, crs)],
                   responses=[(28, "D28", "cr" if n <= 27 else "nr", {"marrow_blasts_pct": "1" if n <= 27 else "60"})])


def test_maude_2014_table_is_reproduced_from_records_entered_through_the_api(world):
    design(world)
    systems = SiteSystems(world, site=world.site_a, coordinator=world.coordinator,
                          investigator=world.investigator, day0=day0_for_history(200))
    for n, age in enumerate(CHILD_AGES + ADULT_AGES, start=1):
        build(systems, patient(n, age))

    body = systems.coordinator.get(f"/api/v1/trials/{systems.trial}/summary/").json()
    assert body["n_subjects"] == 30
    ages = body["characteristics"]["age_years"]
    assert (ages["min"], ages["max"]) == (5.0, 60.0)  # 5 to 60 years
    assert sum(1 for r in body["subjects"] if r["age_years"] <= 22) == 25  # 25 children and young adults
    assert body["characteristics"]["prior_hsct"] == 18  # 18 relapsed after allogeneic SCT
    assert body["response"]["counts"]["CR"] == 27
    assert body["response"]["cr_cri"] == {"n": 27, "of": 30, "rate": 0.9}  # 90%
    assert body["crs"]["max_grade_counts"]["0"] == 0  # every patient had CRS
    assert body["crs"]["grade_3_or_more"] == 8  # severe CRS in 27% (8 / 30 = 0.267)
    assert round(body["crs"]["grade_3_or_more"] / body["n_subjects"], 2) == 0.27
