"""The admin's one format for cell doses and counts, dates and date-times (config.display)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils import formats, timezone

from config import display


@pytest.mark.parametrize(("value", "shown"), [
    (0, "0 cells/kg"),
    (1, "1.0 × 10⁰ cells/kg"),
    (999_999, "1.0 × 10⁶ cells/kg"),  # rounds up to the next power of ten, never "10.0 × 10⁵"
    (Decimal("1000000"), "1.0 × 10⁶ cells/kg"),
    (1.75e6, "1.75 × 10⁶ cells/kg"),
    (Decimal("2.5e8"), "2.5 × 10⁸ cells/kg"),
    (Decimal("3"), "3.0 × 10⁰ cells/kg"),
    (Decimal("123456789"), "1.23 × 10⁸ cells/kg"),
    (None, "—"),
])
def test_cell_doses_are_written_in_scientific_notation_with_the_unit(value: object, shown: str) -> None:
    assert display.cells_per_kg(value) == shown  # type: ignore[arg-type]


def test_counts_below_one_have_a_negative_superscript() -> None:
    assert display.scientific(Decimal("0.0025"), "%") == "2.5 × 10⁻³ %"


def test_cell_counts_and_counts_stored_in_units_of_a_billion() -> None:
    assert display.cells(Decimal("2.1e8")) == "2.1 × 10⁸ cells"
    assert display.cells_1e9(Decimal("3.50")) == "3.5 × 10⁹ cells"
    assert display.cells_1e9(None) == "—"


def test_a_number_is_never_shown_in_e_notation_or_in_full() -> None:
    for value in (1_000_000, 1.0e6, Decimal("1E+6"), "1000000"):
        shown = display.cells_per_kg(value)  # type: ignore[arg-type]
        assert "e" not in shown.split()[0] and "1000000" not in shown


def test_not_a_number_is_refused() -> None:
    with pytest.raises(ValueError):
        display.scientific("many")
    with pytest.raises(ValueError):
        display.scientific(float("inf"))


def test_dates_and_times_have_one_format_on_the_site_clock_with_the_zone() -> None:
    moment = dt.datetime(2026, 3, 14, 8, 30, tzinfo=dt.UTC)
    assert display.date(dt.date(2026, 3, 4)) == "2026-03-04"
    assert display.date(None) == "—"
    assert display.date_time(moment, ZoneInfo("Europe/Berlin")) == "2026-03-14 09:30 (UTC+01:00)"
    assert display.date_time(moment, ZoneInfo("Asia/Shanghai")) == "2026-03-14 16:30 (UTC+08:00)"
    assert display.date_time(moment, ZoneInfo("Asia/Dubai")) == "2026-03-14 12:30 (UTC+04:00)"
    assert display.date_time(moment) == "2026-03-14 08:30 (UTC+00:00)"
    assert display.date_time(None) == "—"


def test_status_changes_are_written_with_an_arrow() -> None:
    assert display.transition("Infused", "Follow-up") == "Infused → Follow-up"
    assert display.transition("", "Screening") == "→ Screening"


def test_a_time_names_its_offset_not_an_ambiguous_abbreviation() -> None:
    """CST is China Standard Time and US Central Standard Time: the offset tells them apart, summer or winter."""
    winter, summer = dt.datetime(2026, 1, 14, 8, 30, tzinfo=dt.UTC), dt.datetime(2026, 7, 14, 8, 30, tzinfo=dt.UTC)
    assert display.date_time(winter, ZoneInfo("Asia/Shanghai")) == "2026-01-14 16:30 (UTC+08:00)"
    assert display.date_time(winter, ZoneInfo("America/Chicago")) == "2026-01-14 02:30 (UTC-06:00)"
    assert display.date_time(summer, ZoneInfo("America/Chicago")) == "2026-07-14 03:30 (UTC-05:00)"
    assert display.date_time(winter, ZoneInfo("Asia/Kathmandu")) == "2026-01-14 14:15 (UTC+05:45)"


def test_djangos_own_date_times_carry_the_offset_too() -> None:
    moment = dt.datetime(2026, 1, 14, 8, 30, tzinfo=dt.UTC)
    with timezone.override(ZoneInfo("America/Chicago")):
        assert formats.localize(timezone.template_localtime(moment)) == "2026-01-14 02:30 (UTC-0600)"
