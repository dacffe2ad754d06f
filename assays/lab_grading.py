"""CTCAE v5.0 grading of lab adverse events (DOMAIN.md §3.3-§3.5).

Pure functions over plain values, with no Django imports. Values, limits and baselines are in the
canonical units of the analyte catalogue (DOMAIN §3.2: convert before grading): counts in 10^9/L,
haemoglobin in g/L, ALT/AST in U/L, bilirubin and creatinine in umol/L, fibrinogen in g/L.

Comparison rule (DOMAIN §3.5 asks us to choose one): numbers are compared exactly as the decimals
they print as, with no rounding, so 2.1 umol/L is exactly 3 × 0.7 umol/L and grades as "≤ 3.0×ULN".
Plain float products would get such boundaries wrong (3 * 0.7 == 2.0999999999999996). The decimals are
``decimal.Decimal`` (C arithmetic); a ratio is never divided out: "value > 3 × ULN" is compared as the
product, which the context below computes exactly (it traps any inexact result). The "decreased" terms
multiply nothing: they compare the value with cutoffs and the LLN, and comparing two floats is comparing
the decimals they print as (``repr`` gives the shortest decimal that rounds back to the float, and rounding
is monotonic, so x < y exactly when repr(x) < repr(y) as decimals). So they compare floats, against
cutoffs that are each the decimal their float prints as (checked below), and make no Decimal.

A grade that cannot be decided from the inputs is None, e.g. grade 0 vs 1 of a "decreased" term
without an LLN (admiral does the same), or an "increased" term without the ULN (or the baseline,
when the baseline was high). A limit or baseline that is not a positive number counts as missing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Context, Decimal, Inexact
from functools import lru_cache

LAB_GRADING_VERSION = "CTCAE v5.0"

# "Decreased" terms: the lower bounds of grades 2, 3 and 4 (value < bound → that grade), DOMAIN §3.3.
DECREASED_CUTOFFS: dict[str, tuple[str, ...]] = {
    "neutrophil_decreased": ("1.5", "1.0", "0.5"),  # 10^9/L
    "platelet_decreased": ("75", "50", "25"),  # 10^9/L
    "lymphocyte_decreased": ("0.8", "0.5", "0.2"),  # 10^9/L
    "wbc_decreased": ("3.0", "2.0", "1.0"),  # 10^9/L
    "anaemia": ("100", "80"),  # g/L; grade 4 is clinical (life-threatening), so the lab grade stops at 3
}

# ALT/AST/bilirubin: multiples of the ULN (or of the baseline when it was high) above which grades
# 2, 3 and 4 start, and the grade-1 rule when the baseline was high (DOMAIN §3.5 ctcae_liver).
LIVER_MULTIPLES: dict[str, tuple[str, str, str]] = {
    "alt_increased": ("3.0", "5.0", "20.0"),
    "ast_increased": ("3.0", "5.0", "20.0"),
    "bilirubin_increased": ("1.5", "3.0", "10.0"),
}
# Baseline high: ALT/AST grade 1 is "1.5-3.0 × baseline" (≥ 1.5); bilirubin ">1.0-1.5 × baseline".
BASELINE_HIGH_GRADE1 = {"alt_increased": ("ge", Decimal("1.5")), "ast_increased": ("ge", Decimal("1.5")),
                        "bilirubin_increased": ("gt", Decimal(1))}

FIBRINOGEN_ABSOLUTE_G4 = Decimal("0.5")  # g/L: "<50 mg/dL" is grade 4 whatever the LLN

# The same bounds as exact numbers, made once (not on every value graded).
_DECREASED_BOUNDS = {term: tuple(float(c) for c in cutoffs) for term, cutoffs in DECREASED_CUTOFFS.items()}
if any(Decimal(repr(float(c))) != Decimal(c) for cutoffs in DECREASED_CUTOFFS.values() for c in cutoffs):
    raise ValueError("A 'decreased' cutoff is not the decimal its float prints as: compare it as a Decimal.")
_LIVER_BOUNDS = {term: tuple(Decimal(m) for m in multiples) for term, multiples in LIVER_MULTIPLES.items()}
_FIBRINOGEN_OF_LLN = (Decimal("0.25"), Decimal("0.5"), Decimal("0.75"))  # grades 4, 3, 2 below these × LLN
_FIBRINOGEN_KEPT = (Decimal("0.25"), Decimal("0.5"), Decimal("0.75"))  # grades 4, 3, 2 at most this share kept

# Every product is a printed float (at most 17 significant digits) times a constant of at most 2: 60 digits
# leave room, and Inexact is trapped so that a rounded product can never decide a grade silently.
_EXACT = Context(prec=60, traps=[Inexact])

TERMS = frozenset(DECREASED_CUTOFFS) | frozenset(LIVER_MULTIPLES) | {"creatinine_increased", "fibrinogen_decreased"}


def grade_lab(*, term: str, value: float, lln: float | None, uln: float | None, baseline: float | None = None,
              baseline_high: bool = False) -> int | None:
    """CTCAE v5.0 grade (0-4) of one lab value for a CtcaeLabTerm value, or None when undecidable.

    `baseline` is the subject's baseline value (SAP-defined, DOMAIN §3.4). It is used by
    - ALT/AST/bilirubin only when `baseline_high` (the baseline was above its ULN): multiples of it
      replace multiples of the ULN;
    - creatinine always when given: grades 2-3 use the baseline or the ULN, whichever grades higher;
    - fibrinogen when given and the value is below the LLN: the % fall from baseline may raise the grade.
    Raises ValueError for an unknown term or a value that is not a finite number.
    """
    if term not in TERMS:
        raise ValueError(f"Unknown CTCAE lab term {term!r}; expected one of {', '.join(sorted(TERMS))}.")
    if term in DECREASED_CUTOFFS:  # no product: the floats compare as their decimals (module docstring)
        f = _finite(value)
        if f is None:
            raise ValueError(f"Cannot grade the value {value!r}: not a finite number.")
        return _decreased(f, _positive(lln), _DECREASED_BOUNDS[term])
    v = _exact(value)
    if v is None:
        raise ValueError(f"Cannot grade the value {value!r}: not a finite number.")
    lln_q, uln_q, base_q = _limit(lln), _limit(uln), _limit(baseline)
    if term in LIVER_MULTIPLES:
        return _liver(term, v, uln_q, base_q, baseline_high)
    if term == "creatinine_increased":
        return _creatinine(v, uln_q, base_q)
    return _fibrinogen(v, lln_q, base_q)


def lab_grader(*, term: str, lln: float | None, uln: float | None) -> Callable[[float], int | None]:
    """``grade_lab`` without a baseline, for one term and one reference range, as a function of the value alone:
    the same grades and errors, for grading many values against one range (a batch of results).

    The range's bounds are worked out once. A "decreased" term compares floats already (module docstring). For
    ALT, AST and bilirubin, each multiple of the ULN becomes the largest float whose decimal is at most the exact
    product (``_last_at_most``): since ``repr`` is monotonic, a value's decimal exceeds the product exactly when
    its float exceeds that bound, so no Decimal is made per value. Creatinine and fibrinogen grade each value
    with ``grade_lab``. tests/assays/test_lab_grading.py compares the two forms at and around every bound."""
    if term not in TERMS:
        raise ValueError(f"Unknown CTCAE lab term {term!r}; expected one of {', '.join(sorted(TERMS))}.")
    if term in DECREASED_CUTOFFS:
        limit, cutoffs = _positive(lln), _DECREASED_BOUNDS[term]

        def decreased(value: float) -> int | None:
            return _decreased(_finite_or_refused(value), limit, cutoffs)

        return decreased
    if term in LIVER_MULTIPLES:
        return _liver_grader(term, _limit(uln))

    def other(value: float) -> int | None:
        return grade_lab(term=term, value=value, lln=lln, uln=uln)

    return other


def _liver_grader(term: str, uln: Decimal | None) -> Callable[[float], int | None]:
    """``_liver`` without a baseline as a function of the value (see ``lab_grader``)."""
    if uln is None:

        def undecided(value: float) -> int | None:
            _finite_or_refused(value)
            return None  # _liver without its reference

        return undecided
    g2, g3, g4 = (_last_at_most(_times(multiple, uln)) for multiple in _LIVER_BOUNDS[term])
    upper = float(uln)  # the float the ULN was: compared with the value's float, as their decimals

    def liver(value: float) -> int | None:
        v = _finite_or_refused(value)
        return 4 if v > g4 else 3 if v > g3 else 2 if v > g2 else int(v > upper)

    return liver


def _finite_or_refused(value: float | int | None) -> float:
    f = _finite(value)
    if f is None:
        raise ValueError(f"Cannot grade the value {value!r}: not a finite number.")
    return f


def _last_at_most(bound: Decimal) -> float:
    """The largest float whose decimal (``repr``) is at most ``bound``: for a float v, ``v > _last_at_most(b)``
    exactly when v's decimal is greater than b (repr is monotonic)."""
    f = float(bound)  # the nearest float: at most a step or two from the answer
    while Decimal(repr(f)) > bound:
        f = math.nextafter(f, -math.inf)
    while Decimal(repr(up := math.nextafter(f, math.inf))) <= bound:
        f = up
    return f


def _finite(x: float | int | None) -> float | None:
    """The number as a float (None if missing or not finite): what ``_exact`` makes a Decimal of."""
    if x is None or isinstance(x, bool):
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def _positive(x: float | None) -> float | None:
    """``_limit`` as a float: a limit that is not a positive number counts as missing."""
    f = _finite(x)
    return f if f is not None and f > 0 else None


def _exact(x: float | int | None) -> Decimal | None:
    """The number as the decimal it prints as (None if missing or not finite)."""
    if x is None or isinstance(x, bool):
        return None
    return _exact_float(float(x))


@lru_cache(maxsize=65_536)
def _exact_float(f: float) -> Decimal | None:
    """Kept per value: limits recur on every value graded, and laboratories report few distinct values."""
    return Decimal(repr(f)) if math.isfinite(f) else None


def _times(a: Decimal, b: Decimal) -> Decimal:
    return _EXACT.multiply(a, b)


def _limit(x: float | None) -> Decimal | None:
    q = _exact(x)
    return q if q is not None and q > 0 else None


def _decreased(v: float, lln: float | None, cutoffs: tuple[float, ...]) -> int | None:
    """DOMAIN §3.5 ctcae_decreased; `cutoffs` are the lower bounds of grades 2, 3[, 4]."""
    for grade in range(len(cutoffs) + 1, 1, -1):  # highest grade first
        if v < cutoffs[grade - 2]:
            return grade
    if lln is None:
        return None  # grade 0 vs 1 needs the LLN
    return 1 if v < lln else 0


def _liver(term: str, v: Decimal, uln: Decimal | None, base: Decimal | None, base_high: bool) -> int | None:
    """DOMAIN §3.5 ctcae_liver: multiples of the ULN, or of the baseline when the baseline was high."""
    ref = base if base_high else uln
    if ref is None:
        return None
    g2, g3, g4 = _LIVER_BOUNDS[term]
    if v > _times(g4, ref):
        return 4
    if v > _times(g3, ref):
        return 3
    if v > _times(g2, ref):
        return 2
    if base_high:
        op, bound = BASELINE_HIGH_GRADE1[term]
        limit = _times(bound, ref)
        return int(v >= limit if op == "ge" else v > limit)
    return int(v > ref)


def _creatinine(v: Decimal, uln: Decimal | None, base: Decimal | None) -> int | None:
    """DOMAIN §3.5 ctcae_creatinine. Without the ULN grade 4 (>6×ULN) and grade 0 vs 1 are unknowable."""
    if uln is None:
        return None
    if v > _times(Decimal(6), uln):
        return 4
    if v > _times(Decimal(3), uln) or (base is not None and v > _times(Decimal(3), base)):
        return 3
    if v > _times(Decimal("1.5"), uln) or (base is not None and v > _times(Decimal("1.5"), base)):
        return 2
    return int(v > uln)


def _fibrinogen(v: Decimal, lln: Decimal | None, base: Decimal | None) -> int | None:
    """DOMAIN §3.5 ctcae_fibrinogen (g/L); the %-fall rule applies once the value is below the LLN."""
    if v < FIBRINOGEN_ABSOLUTE_G4:
        return 4
    if lln is None:
        return None
    grade = next((g for g, share in zip((4, 3, 2), _FIBRINOGEN_OF_LLN, strict=True) if v < _times(share, lln)),
                 1 if v < lln else 0)
    if grade and base is not None:
        # a fall of at least 75% / 50% / 25% of the baseline: the value is at most 25% / 50% / 75% of it
        by_fall = next((g for g, kept in zip((4, 3, 2), _FIBRINOGEN_KEPT, strict=True) if v <= _times(kept, base)), 1)
        grade = max(grade, by_fall)
    return grade
