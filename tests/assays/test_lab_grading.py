"""CTCAE v5.0 lab grading: DOMAIN.md §3.3 table boundaries for every CtcaeLabTerm, and the catalogue it reads."""

import math
import random
from decimal import Decimal

import pytest

from assays.lab_grading import (
    DECREASED_CUTOFFS,
    LAB_GRADING_VERSION,
    LIVER_MULTIPLES,
    TERMS,
    grade_lab,
    lab_grader,
)
from assays.models import Analyte, AnalyteUnit, CtcaeLabTerm, ReferenceRange

ANC, PLT, HGB = "neutrophil_decreased", "platelet_decreased", "anaemia"
LYMPH, WBC = "lymphocyte_decreased", "wbc_decreased"
ALT, AST, BILI = "alt_increased", "ast_increased", "bilirubin_increased"
CREAT, FIB = "creatinine_increased", "fibrinogen_decreased"


def test_version_names_the_standard():
    assert LAB_GRADING_VERSION == "CTCAE v5.0"


def test_every_ctcae_lab_term_of_the_models_is_graded():
    assert set(CtcaeLabTerm.values) == TERMS
    for term in CtcaeLabTerm.values:  # each one grades a value, none raises
        grade_lab(term=term, value=1.0, lln=2.0, uln=3.0)


# "Decreased" terms (10^9/L; haemoglobin g/L): value, LLN → grade. "<LLN-1.5" means 1.5 ≤ v < LLN (DOMAIN §3.2).
DECREASED = [
    (ANC, 2.5, 2.0, 0), (ANC, 2.0, 2.0, 0), (ANC, 1.99, 2.0, 1), (ANC, 1.5, 2.0, 1), (ANC, 1.49, 2.0, 2),
    (ANC, 1.0, 2.0, 2), (ANC, 0.99, 2.0, 3), (ANC, 0.5, 2.0, 3), (ANC, 0.49, 2.0, 4), (ANC, 0.0, 2.0, 4),
    (PLT, 160, 150, 0), (PLT, 150, 150, 0), (PLT, 149, 150, 1), (PLT, 75, 150, 1), (PLT, 74.9, 150, 2),
    (PLT, 50, 150, 2), (PLT, 49.9, 150, 3), (PLT, 25, 150, 3), (PLT, 24.9, 150, 4), (PLT, 3, 150, 4),
    (LYMPH, 1.0, 1.0, 0), (LYMPH, 0.99, 1.0, 1), (LYMPH, 0.8, 1.0, 1), (LYMPH, 0.79, 1.0, 2), (LYMPH, 0.5, 1.0, 2),
    (LYMPH, 0.49, 1.0, 3), (LYMPH, 0.2, 1.0, 3), (LYMPH, 0.19, 1.0, 4),
    (WBC, 4.0, 4.0, 0), (WBC, 3.99, 4.0, 1), (WBC, 3.0, 4.0, 1), (WBC, 2.99, 4.0, 2), (WBC, 2.0, 4.0, 2),
    (WBC, 1.99, 4.0, 3), (WBC, 1.0, 4.0, 3), (WBC, 0.99, 4.0, 4),
    (HGB, 135, 120, 0), (HGB, 120, 120, 0), (HGB, 119, 120, 1), (HGB, 100, 120, 1), (HGB, 99.9, 120, 2),
    (HGB, 80, 120, 2), (HGB, 79.9, 120, 3),
    (HGB, 30, 120, 3),  # grade 4 anaemia is clinical (life-threatening), never a lab grade
]


@pytest.mark.parametrize(("term", "value", "lln", "grade"), DECREASED)
def test_decreased_terms_follow_the_ctcae_table(term, value, lln, grade):
    assert grade_lab(term=term, value=value, lln=lln, uln=None) == grade


@pytest.mark.parametrize(("term", "value", "grade"), [
    (ANC, 2.5, None), (ANC, 1.5, None), (ANC, 1.49, 2), (ANC, 0.49, 4),
    (PLT, 200, None), (PLT, 74, 2), (LYMPH, 0.8, None), (LYMPH, 0.1, 4), (WBC, 3.0, None), (WBC, 2.5, 2),
    (HGB, 100, None), (HGB, 99, 2), (HGB, 70, 3),
])
def test_without_lln_grade_0_or_1_is_undecided_but_absolute_grades_are_given(term, value, grade):
    assert grade_lab(term=term, value=value, lln=None, uln=None) == grade


# ALT/AST, baseline normal, ULN 40 U/L: >ULN-3.0×ULN → 1, >3.0-5.0× → 2, >5.0-20.0× → 3, >20.0× → 4.
TRANSAMINASE = [(30, 0), (40, 0), (40.1, 1), (120, 1), (120.4, 2), (200, 2), (200.4, 3), (800, 3), (800.4, 4),
                (5000, 4)]


@pytest.mark.parametrize("term", [ALT, AST])
@pytest.mark.parametrize(("value", "grade"), TRANSAMINASE)
def test_transaminases_with_normal_baseline_use_the_uln(term, value, grade):
    assert grade_lab(term=term, value=value, lln=None, uln=40) == grade
    # A baseline that was not high changes nothing.
    assert grade_lab(term=term, value=value, lln=None, uln=40, baseline=35) == grade


# Baseline high (100 U/L, ULN 40): 1.5-3.0×baseline → 1, then >3, >5, >20 × baseline.
@pytest.mark.parametrize("term", [ALT, AST])
@pytest.mark.parametrize(("value", "grade"), [(60, 0), (100, 0), (149, 0), (150, 1), (300, 1), (301, 2), (500, 2),
                                              (501, 3), (2000, 3), (2001, 4)])
def test_transaminases_with_high_baseline_use_the_baseline(term, value, grade):
    assert grade_lab(term=term, value=value, lln=None, uln=40, baseline=100, baseline_high=True) == grade


def test_high_baseline_changes_the_grade_of_the_same_value():
    # 150 U/L is 3.75×ULN (grade 2) but 1.5×a high baseline of 100 (grade 1).
    assert grade_lab(term=ALT, value=150, lln=None, uln=40) == 2
    assert grade_lab(term=ALT, value=150, lln=None, uln=40, baseline=100, baseline_high=True) == 1


@pytest.mark.parametrize(("uln", "baseline", "baseline_high"), [(None, None, False), (None, 100, False),
                                                                (40, None, True), (0, None, False)])
def test_transaminase_without_its_reference_is_undecided(uln, baseline, baseline_high):
    assert grade_lab(term=ALT, value=900, lln=None, uln=uln, baseline=baseline, baseline_high=baseline_high) is None


# Bilirubin (umol/L), ULN 20: >ULN-1.5 → 1, >1.5-3.0 → 2, >3.0-10.0 → 3, >10.0 → 4.
@pytest.mark.parametrize(("value", "grade"), [(10, 0), (20, 0), (20.1, 1), (30, 1), (30.1, 2), (60, 2), (60.1, 3),
                                              (200, 3), (200.1, 4)])
def test_bilirubin_with_normal_baseline(value, grade):
    assert grade_lab(term=BILI, value=value, lln=None, uln=20) == grade


# Baseline high (30 umol/L): >1.0-1.5×baseline → 1 (not ≥1.5 as for ALT/AST).
@pytest.mark.parametrize(("value", "grade"), [(25, 0), (30, 0), (30.1, 1), (45, 1), (45.1, 2), (90, 2), (90.1, 3),
                                              (300, 3), (300.1, 4)])
def test_bilirubin_with_high_baseline(value, grade):
    assert grade_lab(term=BILI, value=value, lln=None, uln=20, baseline=30, baseline_high=True) == grade


# Creatinine (umol/L), ULN 100: >ULN-1.5 → 1, >1.5-3.0 → 2, >3.0-6.0 → 3, >6.0×ULN → 4.
@pytest.mark.parametrize(("value", "grade"), [(60, 0), (100, 0), (101, 1), (150, 1), (151, 2), (300, 2), (301, 3),
                                              (600, 3), (601, 4)])
def test_creatinine_by_uln(value, grade):
    assert grade_lab(term=CREAT, value=value, lln=None, uln=100) == grade


@pytest.mark.parametrize(("value", "baseline", "grade"), [
    (120, 80, 1),   # 1.2×ULN, exactly 1.5×baseline: grade 1
    (121, 80, 2),   # >1.5×baseline beats 1.21×ULN
    (240, 80, 2),   # exactly 3×baseline
    (241, 80, 3),   # >3×baseline beats 2.41×ULN
    (200, 150, 2),  # 2×ULN beats 1.33×baseline: whichever is higher
    (310, 150, 3),  # 3.1×ULN (grade 3) beats 2.07×baseline (grade 2)
    (601, 80, 4),   # grade 4 is by ULN only
])
def test_creatinine_uses_baseline_or_uln_whichever_grades_higher(value, baseline, grade):
    assert grade_lab(term=CREAT, value=value, lln=None, uln=100, baseline=baseline) == grade


def test_creatinine_without_uln_is_undecided_even_with_a_baseline():
    assert grade_lab(term=CREAT, value=400, lln=None, uln=None, baseline=80) is None


# Fibrinogen (g/L), LLN 2.0: <1.0-0.75×LLN → 1, <0.75-0.5 → 2, <0.5-0.25 → 3, <0.25×LLN or <0.5 g/L → 4.
@pytest.mark.parametrize(("value", "lln", "grade"), [
    (3.0, 2.0, 0), (2.0, 2.0, 0), (1.99, 2.0, 1), (1.5, 2.0, 1), (1.49, 2.0, 2), (1.0, 2.0, 2), (0.99, 2.0, 3),
    (0.5, 2.0, 3), (0.49, 2.0, 4),
    (0.99, 4.0, 4),  # <0.25×LLN although above 0.5 g/L
    (0.49, None, 4), (0.3, 0.4, 4),  # absolute <0.5 g/L is grade 4 whatever the LLN
    (1.0, None, None), (2.5, None, None),
])
def test_fibrinogen_by_lln_and_absolute_cutoff(value, lln, grade):
    assert grade_lab(term=FIB, value=value, lln=lln, uln=None) == grade


@pytest.mark.parametrize(("value", "baseline", "grade"), [
    (1.9, 2.5, 1),  # 24% fall: grade 1
    (1.9, 2.6, 2),  # 26.9% fall: grade 2 although 0.95×LLN
    (1.5, 2.0, 2),  # exactly 25% fall; 0.75×LLN alone is grade 1
    (1.9, 3.8, 3),  # exactly 50% fall
    (1.9, 7.6, 4),  # exactly 75% fall
    (1.9, 1.8, 1),  # rose from baseline: the LLN grade stands
    (3.0, 4.0, 0),  # 25% fall but not below the LLN: the %-fall rule does not apply
    (2.0, 8.0, 0),  # 75% fall, at the LLN: still normal
])
def test_fibrinogen_fall_from_baseline_applies_below_lln(value, baseline, grade):
    assert grade_lab(term=FIB, value=value, lln=2.0, uln=None, baseline=baseline) == grade


@pytest.mark.parametrize(("term", "value", "lln", "uln", "grade"), [
    (BILI, 22.8, None, 15.2, 1),  # exactly 1.5×ULN; 22.8 / 15.2 == 1.5000000000000002 in floats
    (FIB, 1.2, 1.6, None, 1),     # exactly 0.75×LLN; 1.2 / 1.6 == 0.7499999999999999 in floats
    (CREAT, 2.1, None, 0.7, 2),   # exactly 3×ULN; 3 * 0.7 == 2.0999999999999996 in floats
])
def test_boundaries_compare_the_decimals_as_reported(term, value, lln, uln, grade):
    assert grade_lab(term=term, value=value, lln=lln, uln=uln) == grade


def _decreased_as_decimals(term, value, lln):
    """The "decreased" rule with every number as the Decimal it prints as (how the grader compared them before
    it compared the floats themselves)."""
    v = Decimal(repr(float(value)))
    cutoffs = DECREASED_CUTOFFS[term]  # the lower bounds of grades 2, 3[, 4]
    for grade in range(len(cutoffs) + 1, 1, -1):
        if v < Decimal(cutoffs[grade - 2]):
            return grade
    limit = Decimal(repr(float(lln))) if lln is not None and math.isfinite(lln) else None
    if limit is None or limit <= 0:
        return None
    return 1 if v < limit else 0


def test_decreased_terms_compare_floats_as_the_decimals_they_print_as():
    """Floats are compared directly for these terms: the same grade as comparing their decimals, at and around
    every cutoff and LLN (one float step either side), on random values and for missing or bad LLNs."""
    rng = random.Random(14)
    for term, cutoffs in DECREASED_CUTOFFS.items():
        edges = [float(c) for c in cutoffs] + [0.7, 1.0, 1.8, 2.1, 120.0, 150.0, 4.0]
        values = [x for e in edges for x in (math.nextafter(e, 0), e, math.nextafter(e, math.inf))]
        values += [round(rng.uniform(0, 400), rng.choice((1, 2, 3))) for _ in range(3000)] + [0, 75, 2]
        for lln in (None, 0.0, -1.0, 1.8, 2.1, 0.7, 120, 150.0, 4.0, math.nextafter(1.8, 0), math.inf):
            for value in values:
                assert grade_lab(term=term, value=value, lln=lln, uln=None) == _decreased_as_decimals(
                    term, value, lln), (term, value, lln)


def _around(x: float) -> list[float]:
    return [math.nextafter(math.nextafter(x, 0), 0), math.nextafter(x, 0), x, math.nextafter(x, math.inf),
            math.nextafter(math.nextafter(x, math.inf), math.inf)]


@pytest.mark.parametrize("term", sorted(TERMS))
def test_grader_of_a_range_grades_as_grade_lab(term):
    """lab_grader (one range's bounds worked out once, floats compared) gives grade_lab's grade for every term, at
    and two float steps around every bound (each multiple of the ULN as an exact product, the ULN, the LLN and the
    cutoffs), on random values with 1 to 3 decimals and for missing or bad limits."""
    rng = random.Random(22)
    limits = [None, 0.0, -1.0, 0.7, 1.8, 2.1, 3.3, 20, 40.0, 56.7, 120, 150.0, math.nextafter(40.0, 0),
              round(rng.uniform(0.1, 300), 2), round(rng.uniform(0.1, 300), 3), math.inf]
    for limit in limits:
        edges = [0.0, 0.5, 1.0, 2.1, 75.0, 100.0] + [float(c) for c in DECREASED_CUTOFFS.get(term, ())]
        if limit is not None and math.isfinite(limit) and limit > 0:
            exact = Decimal(repr(float(limit)))
            edges += [limit] + [float(Decimal(m) * exact) for m in LIVER_MULTIPLES.get(term, ("1.5", "3", "6"))]
            edges += [float(share * exact) for share in (Decimal("0.25"), Decimal("0.5"), Decimal("0.75"))]
        values = [x for edge in edges for x in _around(edge)]
        values += [round(rng.uniform(0, 1200), rng.choice((1, 2, 3))) for _ in range(1500)] + [0, 2, 75, 120]
        for lln, uln in ((limit, None), (None, limit), (limit, limit), (1.0, limit), (limit, 40.0)):
            grade = lab_grader(term=term, lln=lln, uln=uln)
            for value in values:
                assert grade(value) == grade_lab(term=term, value=value, lln=lln, uln=uln), (term, value, lln, uln)


def test_grader_of_a_range_refuses_what_grade_lab_refuses():
    with pytest.raises(ValueError, match="Unknown CTCAE lab term"):
        lab_grader(term="hypofibrinogenemia", lln=2.0, uln=None)
    for term in (ANC, ALT):
        for uln in (None, 40.0):
            for bad in (math.nan, math.inf, None):
                with pytest.raises(ValueError, match="finite"):
                    lab_grader(term=term, lln=2.0, uln=uln)(bad)


def test_unknown_term_and_non_finite_value_are_refused():
    with pytest.raises(ValueError, match="Unknown CTCAE lab term"):
        grade_lab(term="hypofibrinogenemia", value=1.0, lln=2.0, uln=None)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="finite"):
            grade_lab(term=ANC, value=bad, lln=2.0, uln=None)


# The seeded catalogue (migration 0002) feeds the grader: canonical units, conversions and adult ranges.
@pytest.mark.django_db
def test_seeded_catalogue_covers_every_term_with_canonical_unit_factor_one():
    graded = Analyte.objects.exclude(ctcae_term="")
    assert set(graded.values_list("ctcae_term", flat=True)) == set(CtcaeLabTerm.values)
    for analyte in Analyte.objects.all():
        assert AnalyteUnit.objects.get(analyte=analyte, unit=analyte.canonical_unit).factor == 1, analyte.code


@pytest.mark.django_db
@pytest.mark.parametrize(("code", "unit", "sent", "canonical"), [
    ("HGB", "g/dL", 10.0, 100.0), ("HGB", "mmol/L", 6.2, 99.882), ("ANC", "10*3/uL", 1.5, 1.5),
    ("PLT", "/uL", 75000, 75.0), ("FIBRINOGEN", "mg/dL", 50, 0.5), ("TBILI", "mg/dL", 1.0, 17.1),
    ("CREAT", "mg/dL", 1.0, 88.4), ("CRP", "mg/dL", 1.0, 10.0), ("IL6", "ng/mL", 1.0, 1000.0),
    ("CAR_FLOW_ABS", "10*9/L", 0.02, 20.0), ("CAR_QPCR", "copies/ug", 50, 50),
])
def test_seeded_units_convert_as_domain_section_7(code, unit, sent, canonical):
    factor = AnalyteUnit.objects.get(analyte__code=code, unit=unit).factor
    assert sent * factor == pytest.approx(canonical)


@pytest.mark.django_db
@pytest.mark.parametrize("code", ["HGB", "ANC", "PLT", "CREAT"])
def test_seeded_ranges_cover_adults_and_children(code):
    ranges = ReferenceRange.objects.filter(analyte__code=code)
    for age in (5, 15, 40):
        assert any(r.age_min_years <= age <= r.age_max_years and r.low is not None and r.high is not None
                   for r in ranges), (code, age)
    child, adult = (next(r for r in ranges if r.age_min_years <= age <= r.age_max_years) for age in (5, 40))
    assert (child.low, child.high) != (adult.low, adult.high)
