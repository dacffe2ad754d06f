"""BSA and BSA-based dosing: DOMAIN.md §5.7 check values, refusals and tolerance boundaries."""

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patients.dosing import BsaFormula, body_surface_area, planned_dose_mg, within_tolerance

PROPERTY = settings(database=None, max_examples=300)
D = Decimal


@pytest.mark.parametrize(("height", "weight", "formula", "expected"), [
    # DOMAIN §5.7 check values.
    ("170", "70", BsaFormula.MOSTELLER, "1.818"),
    ("170", "70", BsaFormula.DUBOIS, "1.810"),
    ("120", "22", BsaFormula.MOSTELLER, "0.856"),
    ("120", "22", BsaFormula.DUBOIS, "0.860"),
    # Hand-checked: sqrt(180 × 80 / 3600) = 2 exactly; sqrt(30 × 1 / 3600) = 0.09129.
    ("180", "80", BsaFormula.MOSTELLER, "2.000"),
    ("30", "1", BsaFormula.MOSTELLER, "0.091"),
    ("250", "350", BsaFormula.MOSTELLER, "4.930"),
    ("170.5", "70.25", "dubois", "1.816"),  # 1.81632 by float arithmetic
])
def test_body_surface_area(height: str, weight: str, formula: BsaFormula, expected: str) -> None:
    result = body_surface_area(height_cm=D(height), weight_kg=D(weight), formula=formula)
    assert result == D(expected)
    assert result.as_tuple().exponent == -3  # stored with exactly 3 decimals


def test_mosteller_is_the_default() -> None:
    assert body_surface_area(height_cm=D("120"), weight_kg=D("22")) == D("0.856")


def test_bsa_rounds_half_up() -> None:
    # 150 × 79.366614 / 3600 = 1.8185² exactly; half-even rounding would give 1.818.
    assert body_surface_area(height_cm=D("150"), weight_kg=D("79.366614")) == D("1.819")


@pytest.mark.parametrize(("height", "weight", "field"), [
    ("0", "70", "height_cm"), ("-170", "70", "height_cm"), ("29.9", "70", "height_cm"),
    ("250.1", "70", "height_cm"), ("170", "0", "weight_kg"), ("170", "-70", "weight_kg"),
    ("170", "0.9", "weight_kg"), ("170", "350.1", "weight_kg"), ("NaN", "70", "height_cm"),
    ("170", "Infinity", "weight_kg"),
])
def test_bsa_refuses_implausible_measurements(height: str, weight: str, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        body_surface_area(height_cm=D(height), weight_kg=D(weight))


def test_bsa_accepts_range_limits() -> None:
    assert body_surface_area(height_cm=D("30"), weight_kg=D("350"), formula=BsaFormula.DUBOIS) > 0
    assert body_surface_area(height_cm=D("250"), weight_kg=D("1"), formula=BsaFormula.DUBOIS) > 0


def test_bsa_refuses_floats_and_unknown_formulas() -> None:
    with pytest.raises(TypeError, match="height_cm"):
        body_surface_area(height_cm=170.0, weight_kg=D("70"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="BsaFormula"):
        body_surface_area(height_cm=D("170"), weight_kg=D("70"), formula="haycock")  # type: ignore[arg-type]


@PROPERTY
@given(height=st.decimals(min_value=D("30"), max_value=D("250"), places=1),
       weight=st.decimals(min_value=D("1"), max_value=D("350"), places=1),
       formula=st.sampled_from(list(BsaFormula)))
def test_bsa_grows_with_weight(height: Decimal, weight: Decimal, formula: BsaFormula) -> None:
    heavier = min(D("350"), weight + 1)
    assert (body_surface_area(height_cm=height, weight_kg=heavier, formula=formula)
            >= body_surface_area(height_cm=height, weight_kg=weight, formula=formula))


@pytest.mark.parametrize(("dose", "bsa", "expected"), [
    ("30", "1.818", "54.5"),    # 54.54
    ("250", "1.810", "452.5"),  # exact
    ("25", "0.858", "21.5"),    # 21.45 rounds half up (half-even would give 21.4)
    ("30", "0.856", "25.7"),    # 25.68
])
def test_planned_dose_mg(dose: str, bsa: str, expected: str) -> None:
    assert planned_dose_mg(dose_mg_per_m2=D(dose), bsa_m2=D(bsa)) == D(expected)


@pytest.mark.parametrize(("dose", "bsa", "field"), [
    ("0", "1.8", "dose_mg_per_m2"), ("-30", "1.8", "dose_mg_per_m2"),
    ("30", "0", "bsa_m2"), ("30", "-1.8", "bsa_m2"),
])
def test_planned_dose_refuses_non_positive_values(dose: str, bsa: str, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        planned_dose_mg(dose_mg_per_m2=D(dose), bsa_m2=D(bsa))


@pytest.mark.parametrize(("planned", "administered", "tolerance", "expected"), [
    ("100", "110", "10", True),      # upper boundary is inside
    ("100", "110.1", "10", False),
    ("100", "90", "10", True),       # lower boundary is inside
    ("100", "89.9", "10", False),
    ("100", "100", "0", True),
    ("100", "100.01", "0", False),
    ("54.5", "57.2", "5", True),     # 2.725 allowed, 2.7 off
    ("54.5", "57.3", "5", False),    # 2.8 off
    ("54.5", "51.775", "5", True),
    ("54.5", "51.774", "5", False),
    ("100", "0", "100", True),
])
def test_within_tolerance(planned: str, administered: str, tolerance: str, expected: bool) -> None:
    assert within_tolerance(planned=D(planned), administered=D(administered), tolerance_pct=D(tolerance)) is expected


@pytest.mark.parametrize(("planned", "administered", "tolerance", "field"), [
    ("0", "10", "10", "planned"), ("-5", "10", "10", "planned"),
    ("100", "-1", "10", "administered"),
    ("100", "100", "-1", "tolerance_pct"), ("100", "100", "100.1", "tolerance_pct"),
])
def test_within_tolerance_refuses_impossible_values(planned: str, administered: str, tolerance: str,
                                                    field: str) -> None:
    with pytest.raises(ValueError, match=field):
        within_tolerance(planned=D(planned), administered=D(administered), tolerance_pct=D(tolerance))
