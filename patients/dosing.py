"""Body surface area and BSA-based doses (DOMAIN.md §5.7), in Decimal so stored values are exact.

Pure functions with no Django imports; the models store the formula, its inputs and the result.
"""

from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

HEIGHT_RANGE_CM = (Decimal("30"), Decimal("250"))
WEIGHT_RANGE_KG = (Decimal("1"), Decimal("350"))
BSA_PLACES = Decimal("0.001")
DOSE_PLACES = Decimal("0.1")


class BsaFormula(StrEnum):
    MOSTELLER = "mosteller"
    DUBOIS = "dubois"


def body_surface_area(*, height_cm: Decimal, weight_kg: Decimal,
                      formula: BsaFormula = BsaFormula.MOSTELLER) -> Decimal:
    """BSA in m², rounded half-up to 3 decimals. Refuses values outside what a person can measure."""
    height = _decimal_in_range(name="height_cm", value=height_cm, bounds=HEIGHT_RANGE_CM)
    weight = _decimal_in_range(name="weight_kg", value=weight_kg, bounds=WEIGHT_RANGE_KG)
    formula = BsaFormula(formula)  # ValueError for an unknown formula
    if formula == BsaFormula.MOSTELLER:
        bsa = (height * weight / Decimal(3600)).sqrt()
    else:
        bsa = Decimal("0.007184") * weight ** Decimal("0.425") * height ** Decimal("0.725")
    return bsa.quantize(BSA_PLACES, rounding=ROUND_HALF_UP)


def planned_dose_mg(*, dose_mg_per_m2: Decimal, bsa_m2: Decimal) -> Decimal:
    """Planned dose in mg (e.g. fludarabine 30 mg/m²), rounded half-up to 1 decimal."""
    dose = _positive_decimal(name="dose_mg_per_m2", value=dose_mg_per_m2)
    bsa = _positive_decimal(name="bsa_m2", value=bsa_m2)
    return (dose * bsa).quantize(DOSE_PLACES, rounding=ROUND_HALF_UP)


def within_tolerance(*, planned: Decimal, administered: Decimal, tolerance_pct: Decimal) -> bool:
    """True when |administered - planned| <= planned × tolerance_pct / 100 (the boundary is inside)."""
    planned = _positive_decimal(name="planned", value=planned)
    administered = _as_decimal(name="administered", value=administered)
    if administered < 0:
        raise ValueError(f"administered must not be negative, got {administered}.")
    tolerance = _decimal_in_range(name="tolerance_pct", value=tolerance_pct,
                                  bounds=(Decimal(0), Decimal(100)))
    return abs(administered - planned) <= planned * tolerance / 100


def _as_decimal(*, name: str, value: Decimal) -> Decimal:
    # A float has already lost the value that was typed in; ask for Decimal (or int) instead.
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"{name} must be a Decimal, got {type(value).__name__}.")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"{name} must be a finite number, got {value}.")
    return number


def _decimal_in_range(*, name: str, value: Decimal, bounds: tuple[Decimal, Decimal]) -> Decimal:
    number = _as_decimal(name=name, value=value)
    low, high = bounds
    if not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}.")
    return number


def _positive_decimal(*, name: str, value: Decimal) -> Decimal:
    number = _as_decimal(name=name, value=value)
    if number <= 0:
        raise ValueError(f"{name} must be positive, got {value}.")
    return number
