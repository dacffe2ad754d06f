"""Which reference range applies to a subject: pure, so that ingestion (flags and CTCAE grades) and
exports (LBSTNRLO/LBSTNRHI) pick the same one."""

from __future__ import annotations

from collections.abc import Iterable

# (sex or "" for any, age_min_years, age_max_years, low, high), in the catalogue's order (sex, age_min).
RangeRow = tuple[str, int, int, float | None, float | None]


def pick_range(ranges: Iterable[RangeRow], sex: str, age: int | None) -> tuple[float | None, float | None]:
    """(low, high) of the first range for the subject's sex and age; a sex-specific range wins over one for
    any sex. An unknown age matches every age band. (None, None) when no range applies."""
    best: tuple[float | None, float | None] = (None, None)
    for r_sex, age_min, age_max, low, high in ranges:
        if (r_sex in ("", sex)) and (age is None or age_min <= age <= age_max):
            best = (low, high)
            if r_sex == sex:
                break
    return best
