"""A cohort of nine subjects entered through the API, whose every summary figure was computed by hand.

Each expected value below is a literal; the comment beside it shows the arithmetic from the records of the
cohort (never a call into the product). Study days count from day 0 of the first infusion (all subjects were
infused on the same day, D0); course-2 figures count from each re-infused subject's own second day 0.

The cohort: an odd N (9, course 1) and even Ns (cohort PED: 4; course 2: 2), two re-infusions (S1 after a
relapse, S2 after B-cell recovery), censored subjects, a split dose (S3), a donor-derived product (S5), qPCR
values below the LLOQ (50 copies/ug) inside the AUC window before Tmax (S1 day 4 '<LLOQ', S3 day 4 '30') and
after it (S1 day 21, S4 day 28), a subject without CRS (S4), ANC gaps between measurements (S1, S2, S3, S4).
"""

from __future__ import annotations

import csv
import io

import pytest

from tests.summaries.support import Patient, SiteSystems, Toxicity, build, day0_for_history, design

pytestmark = pytest.mark.django_db

FEVER = {"max_temp_c": "38.9"}  # grade 1
HYPOTENSION = {**FEVER, "hypotension": True}  # grade 2 (fluids only)
ONE_PRESSOR = {**HYPOTENSION, "vasopressors": ["norepinephrine"]}  # grade 3
TWO_PRESSORS = {**HYPOTENSION, "vasopressors": ["norepinephrine", "epinephrine"]}  # grade 4
ICE_FIVE = {"orientation_year": True, "orientation_month": True, "orientation_city": False,
            "orientation_hospital": False, "objects_named": 2, "follows_commands": True, "writes_sentence": False,
            "counts_backwards": False}  # ICE 5: grade 2
ICE_EIGHT = {**ICE_FIVE, "orientation_city": True, "orientation_hospital": True, "objects_named": 3}  # grade 1
BLQ = "<LLOQ"
CRS, ICANS = "crs", "icans"
MRD_NEG = {"marrow_blasts_pct": "0.5", "mrd_flow_pct": "0.001"}
MRD_POS = {"marrow_blasts_pct": "1.0", "mrd_flow_pct": "0.5"}

PATIENTS = [
    Patient("S1", "M", 34, "ADULT", prior_hsct=True, second_course=(90, 1_000_000),
            toxicities=[Toxicity(CRS, 2, 6, HYPOTENSION, ("tocilizumab",)), Toxicity(CRS, 91, 92, FEVER)],
            responses=[(28, "D28", "cr_mrd_neg", MRD_NEG), (70, None, "relapse", {"marrow_blasts_pct": "30",
                                                                                   "antigen_status": "positive"}),
                       (118, "D28", "cr", {"marrow_blasts_pct": "1.0"}), (300, None, "cr", {})],
            results={"CD19_BLASTS": [(-7, "95"), (70, "93")],
                     "CAR_QPCR": [(0, BLQ), (4, BLQ), (7, "20000"), (10, "50000"), (14, "30000"), (21, BLQ),
                                  (28, "1000"), (60, "200"), (88, "100"), (97, "18000"), (104, "9000"), (118, "400")],
                     "ANC": [(0, "0.3"), (3, "0.1"), (7, "0.2"), (10, "0.6"), (11, "0.7"), (14, "0.9"),
                             (90, "0.2"), (95, "0.3"), (98, "0.6"), (102, "0.9"), (105, "1.1")],
                     "PLT": [(0, "30"), (7, "15"), (14, "18"), (21, "25"), (28, "40"), (35, "60")],
                     "CD19_B": [(28, "0.1"), (60, "0.2"), (118, "0.1")]},
            follow_ups=[("last_contact", 360)]),
    Patient("S2", "F", 12, "PED", second_course=(100, 1_200_000),
            toxicities=[Toxicity(CRS, 1, 3, FEVER)],
            responses=[(28, "D28", "cri", MRD_POS), (128, "D28", "nr", {"marrow_blasts_pct": "12"})],
            results={"CD19_BLASTS": [(-7, "88")],
                     "CAR_QPCR": [(0, BLQ), (7, "8000"), (14, "12000"), (28, "2000"), (60, BLQ), (107, "3000"),
                                  (114, "5000"), (128, "800")],
                     "ANC": [(0, "0.4"), (2, "0.3"), (9, "0.2"), (16, "0.45"), (20, "0.8"), (27, "1.0"),
                             (35, "1.2")],
                     "PLT": [(0, "12"), (7, "22"), (10, "19"), (14, "25"), (21, "30"), (28, "50")],
                     "CD19_B": [(28, "0.3"), (60, "4.0"), (128, "0.2")]},
            follow_ups=[("last_contact", 330)]),
    Patient("S3", "F", 8, "PED", prior_cart=True, fractions=(300_000, 300_000, 400_000),
            toxicities=[Toxicity(CRS, 3, 10, ONE_PRESSOR, ("tocilizumab", "dexamethasone"))],
            responses=[(28, "D28", "cri_mrd_neg", MRD_NEG), (180, None, "cri", {})],
            results={"CD19_BLASTS": [(-7, "60")],
                     "CAR_QPCR": [(0, BLQ), (4, "30"), (10, "100000"), (14, "60000"), (21, "10000"), (28, "5000"),
                                  (90, "300")],
                     "ANC": [(0, "0.2"), (7, "0.1"), (14, "0.1"), (21, "0.2"), (28, "0.3"), (35, "0.4"),
                             (38, "0.6"), (42, "0.7"), (45, "0.8")],
                     "PLT": [(0, "8"), (7, "5"), (14, "9"), (21, "12"), (28, "22"), (35, "30"), (42, "45")],
                     "CD19_B": [(28, "0.0")]},
            follow_ups=[("death", 250)]),
    Patient("S4", "M", 45, "ADULT", fractions=(1_200_000,),
            responses=[(28, "D28", "pr", {"marrow_blasts_pct": "10"}), (90, None, "pd", {"marrow_blasts_pct": "60"})],
            results={"CD19_BLASTS": [(-7, "99")], "CAR_QPCR": [(0, BLQ), (7, "2000"), (14, "1500"), (28, BLQ)],
                     "ANC": [(0, "0.8"), (7, "0.3"), (14, "0.6"), (21, "1.1"), (28, "1.5")]},
            follow_ups=[("last_contact", 200)]),
    Patient("S5", "F", 23, "ADULT", donor=True, prior_hsct=True, fractions=(1_100_000,),
            toxicities=[Toxicity(CRS, 5, 6, FEVER), Toxicity(ICANS, 5, 8, ICE_FIVE, ("dexamethasone",))],
            responses=[(28, "D28", "cr_mrd_neg", MRD_NEG), (180, None, "cr", {}),
                       (240, None, "relapse", {"marrow_blasts_pct": "20", "antigen_status": "negative"})],
            results={"CD19_BLASTS": [(-7, "97")],
                     "CAR_QPCR": [(0, BLQ), (7, "40000"), (11, "70000"), (14, "35000"), (28, "3000")],
                     "ANC": [(0, "1.0"), (7, "1.2"), (14, "1.5")], "PLT": [(0, "100"), (7, "150"), (14, "200")],
                     "CD19_B": [(28, "0.5")]},
            follow_ups=[("last_contact", 270)]),
    Patient("S6", "M", 16, "PED", fractions=(800_000,),
            toxicities=[Toxicity(CRS, 1, None, HYPOTENSION, ("tocilizumab",))],
            responses=[(28, "D28", "nr", {"marrow_blasts_pct": "45"})],
            results={"CD19_BLASTS": [(-7, "72")], "CAR_QPCR": [(7, "600"), (14, "900"), (21, "300")]},
            follow_ups=[("death", 120)]),
    Patient("S7", "F", 61, "ADULT", prior_hsct=True, fractions=(950_000,),
            toxicities=[Toxicity(CRS, 2, 13, TWO_PRESSORS, ("tocilizumab", "methylprednisolone")),
                        Toxicity(ICANS, 6, 7, ICE_EIGHT)],
            responses=[(28, "D28", "cr", {"marrow_blasts_pct": "2.0", "mrd_flow_pct": "0.05"}),
                       (90, None, "cr", {}), (365, None, "cr", {})],
            results={"CD19_BLASTS": [(-7, "91")],
                     "CAR_QPCR": [(0, BLQ), (7, "25000"), (14, "45000"), (28, "8000"), (180, "500")],
                     "CD19_B": [(28, "2.5")]},
            follow_ups=[("last_contact", 365)]),
    Patient("S8", "M", 5, "PED", fractions=(1_050_000,),
            toxicities=[Toxicity(CRS, 4, 5, FEVER)],
            responses=[(28, "D28", "pd", {"marrow_blasts_pct": "70"})],
            results={"CD19_BLASTS": [(-7, "85")], "CAR_QPCR": [(0, BLQ), (7, BLQ), (14, BLQ)]},
            follow_ups=[("death", 150)]),
    Patient("S9", "F", 29, "ADULT", fractions=(1_000_000,),
            toxicities=[Toxicity(CRS, 3, 7, HYPOTENSION)],
            results={"CAR_QPCR": [(7, "5000"), (14, "9000")]},
            follow_ups=[("death", 20)]),
]


@pytest.fixture
def cohort(world):
    design(world)
    systems = SiteSystems(world, site=world.site_a, coordinator=world.coordinator,
                          investigator=world.investigator, day0=day0_for_history())
    codes = {p.number: build(systems, p) for p in PATIENTS}
    return systems, codes


def summary(systems: SiteSystems, **params) -> dict:
    response = systems.coordinator.get(f"/api/v1/trials/{systems.trial}/summary/", params)
    assert response.status_code == 200, response.json()
    return response.json()


def stats(n, median, low, high):
    return {"n": n, "median": median, "min": low, "max": high}


NONE = stats(0, None, None, None)


def test_every_figure_of_the_hand_computed_cohort(cohort):
    """One cohort entered once (about 400 API calls), read four ways."""
    systems, codes = cohort
    course_1(systems, codes)
    course_2(systems)
    even_cohort(systems, codes)
    csv_rows(systems, codes)


def course_1(systems: SiteSystems, codes: dict[str, str]) -> None:
    body = summary(systems)
    assert (body["trial"], body["cohort"], body["course"], body["n_subjects"]) == (systems.trial, None, 1, 9)
    assert body["data_cutoff"].endswith(("Z", "+00:00"))
    assert body["characteristics"] == {
        # ages 5 8 12 16 23 29 34 45 61: the 5th of 9
        "age_years": stats(9, 23.0, 5.0, 61.0),
        "sex": {"M": 4, "F": 5},  # M: S1 S4 S6 S8
        "product_source": {"allogeneic": 1, "autologous": 8},  # S5's product is its HSCT donor's cells
        # CD19 on blasts, day -7: 60 72 85 88 91 95 97 99 (S9 none): (88 + 91) / 2
        "antigen_expression_pct": stats(8, 89.5, 60.0, 99.0),
        "prior_hsct": 3, "prior_car_t": 1}  # HSCT: S1 S5 S7; CAR-T: S3
    assert body["dosing"] == {
        # S6 0.8M, S7 0.95M, S1 S2 S9 1.0M, S3 0.3M + 0.3M + 0.4M = 1.0M, S8 1.05M, S5 1.1M, S4 1.2M: 5th = 1.0M
        "dose_cells_per_kg": stats(9, 1_000_000.0, 800_000.0, 1_200_000.0),
        "split_doses": 1, "reinfused_subjects": 2}  # S3; S1 and S2
    assert body["response"] == {
        "visit": "D28",
        # CR: S1 (MRD-neg), S5 (MRD-neg), S7; CRi: S2, S3 (MRD-neg); PR S4; NR S6; PD S8; S9 died on day 20
        "counts": {"CR": 3, "CRi": 2, "PR": 1, "NR": 1, "PD": 1}, "not_assessed": 1,
        "cr_cri": {"n": 5, "of": 9, "rate": 0.5556},  # 5 / 9
        "mrd_negative": {"n": 3, "of": 9, "rate": 0.3333}}  # S1 S3 S5; S7's flow MRD 0.05 % is not < 0.01 %
    assert body["crs"] == {
        # S4 0; S2 S5 S8 1; S1 S6 S9 2; S3 3; S7 4 (S1's day-91 CRS belongs to course 2)
        "max_grade_counts": {"0": 1, "1": 3, "2": 3, "3": 1, "4": 1, "5": 0},
        "grade": stats(9, 2.0, 0.0, 4.0),  # 0 1 1 1 2 2 2 3 4
        "grade_3_or_more": 2,
        # onset days 2 1 3 5 1 2 4 3 -> 1 1 2 2 3 3 4 5: (2 + 3) / 2
        "onset_day": stats(8, 2.5, 1.0, 5.0),
        # onset to resolution, both days counted: S1 6-2+1=5, S2 3, S3 8, S5 2, S7 12, S8 2, S9 5 (S6 unresolved)
        # -> 2 2 3 5 5 8 12
        "duration_days": stats(7, 5.0, 2.0, 12.0),
        "tocilizumab": 4, "corticosteroids": 2}  # toci: S1 S3 S6 S7; steroids: S3 dexa, S7 methylpred
    assert body["icans"] == {
        "max_grade_counts": {"0": 7, "1": 1, "2": 1, "3": 0, "4": 0, "5": 0},  # S7 ICE 8: 1; S5 ICE 5: 2
        "grade": stats(9, 0.0, 0.0, 2.0), "grade_3_or_more": 0,
        "onset_day": stats(2, 5.5, 5.0, 6.0),  # (5 + 6) / 2
        "duration_days": stats(2, 3.0, 2.0, 4.0),  # S5 8-5+1=4, S7 7-6+1=2
        "tocilizumab": 0, "corticosteroids": 1}  # S5 dexamethasone for ICANS
    assert body["haematologic"] == {
        # days with ANC < 0.5 from day 0 until recovery / last measurement:
        # S1 0.3(d0) 0.1(d3) 0.2(d7) 0.6(d10): d0-d7 below (gaps between two lows), d8-9 not -> 8
        # S2 d0..d16 all below (0.4 0.3 0.2 0.45, gaps between lows), d17-19 not (0.45 -> 0.8) -> 17
        # S3 d0..d35 below (five weeks, not cut at day 28), d36-37 not (0.4 -> 0.6) -> 36
        # S4 0.8(d0) 0.3(d7) 0.6(d14): only d7 -> 1;  S5 never below -> 0;  others: no ANC
        "anc_below_500_days": stats(5, 8.0, 0.0, 36.0),  # 0 1 8 17 36
        # first of three consecutive >= 0.5 after falling below: S1 d10, S2 d20, S3 d38, S4 d14 (S5 never fell)
        "neutrophil_recovery_day": stats(4, 17.0, 10.0, 38.0),  # 10 14 20 38: (14 + 20) / 2
        # first of three consecutive >= 20 after falling below: S1 d21 (25 40 60), S2 d14 (25 30 50; d7's 22 is
        # followed by 19), S3 d28 (22 30 45); S5 never fell
        "platelet_recovery_day": stats(3, 21.0, 14.0, 28.0)}
    kinetics = body["kinetics"]
    assert {k: v for k, v in kinetics.items() if not k.endswith("_rule")} == {
        "analyte": "CAR_QPCR",
        "baseline_log10": NONE,  # every course-1 baseline is below the LLOQ or missing
        # Cmax: S1 50000 (4.6990), S2 12000 (4.0792), S3 1e5 (5.0), S4 2000 (3.3010), S5 70000 (4.8451),
        # S6 900 (2.9542), S7 45000 (4.6532), S9 9000 (3.9542); S8 never quantified
        # sorted 2.9542 3.3010 3.9542 4.0792 4.6532 4.6990 4.8451 5.0: (4.0792 + 4.6532) / 2
        "cmax_log10": stats(8, 4.3662, 2.9542, 5.0),
        "tmax_days": stats(8, 12.5, 7.0, 14.0),  # 7 10 10 11 14 14 14 14: (11 + 14) / 2
        # AUC 0-28, linear trapezoid, BLQ 0 before Tmax and missing after:
        # S1 (0,0)(4,0)(7,2e4)(10,5e4)(14,3e4)[d21 BLQ dropped](28,1e3): 0+30000+105000+160000+217000 = 512000
        # S2 (0,0)(7,8e3)(14,1.2e4)(28,2e3): 28000+70000+98000 = 196000
        # S3 (0,0)(4,0: '30' < LLOQ)(10,1e5)(14,6e4)(21,1e4)(28,5e3): 0+300000+320000+245000+52500 = 917500
        # S4 (0,0)(7,2e3)(14,1.5e3)[d28 BLQ dropped]: 7000+12250 = 19250
        # S5 (0,0)(7,4e4)(11,7e4)(14,3.5e4)(28,3e3): 140000+220000+157500+266000 = 783500
        # S6 (0,0: no pre-dose sample)(7,600)(14,900)(21,300): 2100+5250+4200 = 11550
        # S7 (0,0)(7,2.5e4)(14,4.5e4)(28,8e3): 87500+245000+371000 = 703500
        # S8 all BLQ before any Tmax: 0;  S9 (0,0)(7,5e3)(14,9e3): 17500+49000 = 66500
        # sorted 0 11550 19250 66500 196000 512000 703500 783500 917500
        "auc_0_28": stats(9, 196000.0, 0.0, 917500.0),
        # last course day above the LLOQ: S1 88 (before its second day 0), S2 28, S3 90, S4 14, S5 28, S6 21,
        # S7 180, S9 14 -> 14 14 21 28 28 88 90 180: (28 + 28) / 2
        "persistence_days": stats(8, 28.0, 14.0, 180.0),
        # last CD19+ B cells after day 0 < 1 %: S1 0.2 yes, S2 4.0 no, S3 0.0 yes, S5 0.5 yes, S7 2.5 no
        "b_cell_aplasia": {"n": 3, "of": 5, "rate": 0.6}}
    assert "LLOQ" in kinetics["lloq_rule"] and "trapezoid" in kinetics["auc_rule"]
    assert body["survival"] == COURSE_1_SURVIVAL
    rows = {r["subject"]: r for r in body["subjects"]}
    assert set(rows) == set(codes.values())
    assert [rows[codes["S1"]][k] for k in ("course", "dose_cells_per_kg", "response", "crs_max_grade", "cmax",
                                           "tmax_day", "auc_0_28", "os_event", "efs_months")] == [
        1, 1_000_000.0, "CR", 2, 50000.0, 10, 512000.0, False, 2.2998]  # EFS: relapse day 70 = 70/30.4375


# Survival, course 1 (days from day 0; months = days / 30.4375). Kaplan-Meier S(t) = prod(1 - d/n); 95 % CI by
# the exponential Greenwood formula exp(-exp(log(-log S) +- 1.96 sqrt(sum d/(n(n-d))) / |log S|)); the median's
# CI bounds are the times the CI bands fall to 0.5 (none: null).
COURSE_1_SURVIVAL = {
    # OS: deaths S9 d20, S6 d120, S8 d150, S3 d250; censored S4 200, S5 270, S2 330, S1 360, S7 365
    # S = 8/9, x7/8 = 7/9, x6/7 = 6/9 (6 m), x4/5 = 0.5333 (12 m); never <= 0.5
    "os": {"n": 9, "events": 4, "median_months": None, "median_ci": [0.6571, None],  # lower band 0.4330 at d20
           "rate_6m": 0.6667, "rate_6m_ci": [0.2817, 0.8783], "rate_12m": 0.5333, "rate_12m_ci": [0.1771, 0.7959]},
    # EFS: S9 death d20; S4 PR, S6 NR, S8 PD at D28 (treatment failure d28); S1 relapse d70; S5 relapse d240;
    # S3 death d250; censored at the last assessment: S2 128, S7 365
    # S = 8/9, x5/8 = 0.5556, x4/5 = 0.4444 (d70 = 2.2998 m: the median), x2/3 = 0.2963 (d240),
    # x1/2 = 0.1481 (d250 = 8.2136 m, where the upper band 0.4676 falls below 0.5)
    "efs": {"n": 9, "events": 7, "median_months": 2.2998, "median_ci": [0.6571, 8.2136],
            "rate_6m": 0.4444, "rate_6m_ci": [0.1359, 0.7193], "rate_12m": 0.1481, "rate_12m_ci": [0.0083, 0.4676]},
    # LFS from the first CR/CRi (D28, day 28): S1 relapse 70-28=42; S5 relapse 240-28=212; S3 death 250-28=222;
    # censored S2 128-28=100, S7 365-28=337. S = 4/5, x2/3 = 0.5333, x1/2 = 0.2667 (d222 = 7.2936 m: median)
    "lfs": {"n": 5, "events": 3, "median_months": 7.2936, "median_ci": [1.3799, None],
            "rate_6m": 0.8, "rate_6m_ci": [0.2038, 0.9692], "rate_12m": 0.2667, "rate_12m_ci": [0.0097, 0.6861]},
    # DOR: as LFS but S3's death without relapse is censored at its last assessment 180-28=152
    # S = 4/5, x1/2 = 0.4 (d212 = 6.9651 m: median)
    "dor": {"n": 5, "events": 2, "median_months": 6.9651, "median_ci": [1.3799, None],
            "rate_6m": 0.8, "rate_6m_ci": [0.2038, 0.9692], "rate_12m": 0.4, "rate_12m_ci": [0.0114, 0.829]},
}


def course_2(systems: SiteSystems) -> None:
    """Course 2 figures count from each re-infused subject's second day 0."""
    body = summary(systems, course=2)
    assert (body["course"], body["n_subjects"]) == (2, 2)  # S1 (day 0 = study day 90), S2 (study day 100)
    assert body["characteristics"] == {
        "age_years": stats(2, 23.0, 12.0, 34.0),  # (12 + 34) / 2
        "sex": {"M": 1, "F": 1}, "product_source": {"autologous": 2},
        "antigen_expression_pct": stats(2, 90.5, 88.0, 93.0),  # S1 93 at relapse (d70), S2 88 (d-7): mean
        "prior_hsct": 1, "prior_car_t": 0}
    assert body["dosing"] == {"dose_cells_per_kg": stats(2, 1_100_000.0, 1_000_000.0, 1_200_000.0),
                              "split_doses": 0, "reinfused_subjects": 2}
    assert body["response"] == {"visit": "D28", "counts": {"CR": 1, "CRi": 0, "PR": 0, "NR": 1, "PD": 0},
                                "not_assessed": 0, "cr_cri": {"n": 1, "of": 2, "rate": 0.5},
                                "mrd_negative": {"n": 0, "of": 2, "rate": 0.0}}
    assert body["crs"] == {"max_grade_counts": {"0": 1, "1": 1, "2": 0, "3": 0, "4": 0, "5": 0},
                           "grade": stats(2, 0.5, 0.0, 1.0),  # S1 1, S2 0: (0 + 1) / 2
                           "grade_3_or_more": 0, "onset_day": stats(1, 1.0, 1.0, 1.0),  # S1 study day 91 = day 1
                           "duration_days": stats(1, 2.0, 2.0, 2.0),  # 92 - 91 + 1
                           "tocilizumab": 0, "corticosteroids": 0}
    assert body["icans"] == {"max_grade_counts": {"0": 2, "1": 0, "2": 0, "3": 0, "4": 0, "5": 0},
                             "grade": stats(2, 0.0, 0.0, 0.0), "grade_3_or_more": 0, "onset_day": NONE,
                             "duration_days": NONE, "tocilizumab": 0, "corticosteroids": 0}
    # S1: ANC 0.2 (d0) 0.3 (d5) 0.6 (d8) 0.9 (d12) 1.1 (d15): d0-d5 below -> 6 days, recovery d8; S2 no counts
    assert body["haematologic"] == {"anc_below_500_days": stats(1, 6.0, 6.0, 6.0),
                                    "neutrophil_recovery_day": stats(1, 8.0, 8.0, 8.0),
                                    "platelet_recovery_day": NONE}
    assert {k: v for k, v in body["kinetics"].items() if not k.endswith("_rule")} == {
        "analyte": "CAR_QPCR",
        "baseline_log10": stats(1, 2.0, 2.0, 2.0),  # S1's residual 100 copies/ug on study day 88; S2 '<LLOQ'
        # S1 18000 at day 7 (log10 4.25527), S2 5000 at day 14 (3.69897): (4.25527 + 3.69897) / 2 = 3.97712
        "cmax_log10": stats(2, 3.9771, 3.699, 4.2553),
        "tmax_days": stats(2, 10.5, 7.0, 14.0),
        # S1 (0,100 baseline)(7,18000)(14,9000)(28,400): 63350+94500+65800 = 223650
        # S2 (0,0)(7,3000)(14,5000)(28,800): 10500+28000+40600 = 79100;  (223650 + 79100) / 2 = 151375
        "auc_0_28": stats(2, 151375.0, 79100.0, 223650.0),
        "persistence_days": stats(2, 28.0, 28.0, 28.0),
        "b_cell_aplasia": {"n": 2, "of": 2, "rate": 1.0}}  # S1 0.1, S2 0.2 at course day 28
    assert body["survival"] == {
        # OS censored: S1 360-90=270, S2 330-100=230
        "os": {"n": 2, "events": 0, "median_months": None, "median_ci": [None, None], "rate_6m": 1.0,
               "rate_6m_ci": [1.0, 1.0], "rate_12m": 1.0, "rate_12m_ci": [1.0, 1.0]},
        # EFS: S2 NR at its D28 (day 28) event; S1 censored at its last assessment 300-90=210. S = 1/2 at d28
        "efs": {"n": 2, "events": 1, "median_months": 0.9199, "median_ci": [0.9199, None], "rate_6m": 0.5,
                "rate_6m_ci": [0.006, 0.9104], "rate_12m": 0.5, "rate_12m_ci": [0.006, 0.9104]},
        # LFS/DOR: S1 from its CR at 118, censored at 300: 182 days
        "lfs": {"n": 1, "events": 0, "median_months": None, "median_ci": [None, None], "rate_6m": 1.0,
                "rate_6m_ci": [1.0, 1.0], "rate_12m": 1.0, "rate_12m_ci": [1.0, 1.0]},
        "dor": {"n": 1, "events": 0, "median_months": None, "median_ci": [None, None], "rate_6m": 1.0,
                "rate_6m_ci": [1.0, 1.0], "rate_12m": 1.0, "rate_12m_ci": [1.0, 1.0]}}


def even_cohort(systems: SiteSystems, codes: dict[str, str]) -> None:
    body = summary(systems, cohort="PED")  # S2 S3 S6 S8
    assert (body["cohort"], body["n_subjects"]) == ("PED", 4)
    assert {r["subject"] for r in body["subjects"]} == {codes[n] for n in ("S2", "S3", "S6", "S8")}
    assert body["characteristics"]["age_years"] == stats(4, 10.0, 5.0, 16.0)  # 5 8 12 16: (8 + 12) / 2
    assert body["crs"]["grade"] == stats(4, 1.5, 1.0, 3.0)  # S2 1, S3 3, S6 2, S8 1 -> 1 1 2 3: (1 + 2) / 2
    assert body["response"]["cr_cri"] == {"n": 2, "of": 4, "rate": 0.5}  # S2 CRi, S3 CRi


def csv_rows(systems: SiteSystems, codes: dict[str, str]) -> None:
    """The per-subject rows download as CSV."""
    response = systems.coordinator.get(f"/api/v1/trials/{systems.trial}/summary/subjects.csv", {"course": 2})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["subject"], r["course"], r["dose_cells_per_kg"], r["response"], r["auc_0_28"]) for r in rows] == [
        (codes["S1"], "2", "1000000.0", "CR", "223650.0"), (codes["S2"], "2", "1200000.0", "NR", "79100.0")]
