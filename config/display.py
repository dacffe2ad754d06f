"""How the admin writes numbers, dates and times for people: one format for each, everywhere.

* Cell doses and counts in scientific notation with their unit: ``1.0 × 10⁶ cells/kg`` (never
  ``1000000`` or ``1.00e+6``). The mantissa keeps up to two decimals (``1.75 × 10⁶``) and at least one.
* Dates as ``2026-03-14`` (ISO 8601: no day/month ambiguity between sites of different countries).
* Date-times on the clock of the record's site, with the zone's offset from UTC: ``2026-03-14 09:30 (UTC+01:00)``.
  Not the zone's abbreviation: ``CST`` is China's and US Central's. The page's site-time note names the zone.

The same formats are Django's ``DATE_FORMAT`` and ``DATETIME_FORMAT`` (``config/formats``), so fields the
admin renders itself agree with the columns and templates that call these functions (Django's format letters
write the offset without its colon, ``UTC+0100``, so the admin's read-only date-times of clinical records are
written by ``date_time``; see trials.admin_scoping).
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

EMPTY = "—"
DATE = "%Y-%m-%d"
TIME = "%H:%M"
SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
MANTISSA_STEP = Decimal("0.01")  # two decimals: 1.75 × 10⁶, the precision dose levels are written with


def _decimal(value: Decimal | float | int | str) -> Decimal:
    try:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation as err:
        raise ValueError(f"Not a number: {value!r}") from err


def _mantissa_text(mantissa: Decimal) -> str:
    text = f"{mantissa:f}".rstrip("0")
    return f"{text}0" if text.endswith(".") else text


def scientific(value: Decimal | float | int | str | None, unit: str = "") -> str:
    """``value`` as ``m.m × 10ⁿ unit``; ``0 unit`` for zero and ``—`` for no value."""
    if value is None:
        return EMPTY
    number = _decimal(value)
    if not number.is_finite():
        raise ValueError(f"Not a finite number: {value!r}")
    if number.is_zero():
        return f"0 {unit}".rstrip()
    magnitude = abs(number)
    exponent = magnitude.adjusted()
    mantissa = magnitude.scaleb(-exponent).quantize(MANTISSA_STEP, rounding=ROUND_HALF_UP)
    if mantissa >= 10:  # 9.999… rounds up to the next power of ten
        mantissa, exponent = (mantissa / 10).quantize(MANTISSA_STEP), exponent + 1
    sign = "−" if number < 0 else ""
    text = f"{sign}{_mantissa_text(mantissa)} × 10{str(exponent).translate(SUPERSCRIPTS)}"
    return f"{text} {unit}".rstrip()


def cells(value: Decimal | float | int | str | None) -> str:
    """A cell count, e.g. ``2.5 × 10⁸ cells``."""
    return scientific(value, "cells")


def cells_per_kg(value: Decimal | float | int | str | None) -> str:
    """A cell dose by weight, e.g. ``1.0 × 10⁶ cells/kg``."""
    return scientific(value, "cells/kg")


def cells_1e9(value: Decimal | float | int | str | None) -> str:
    """A count stored in units of 10⁹ cells (an apheresis CD3⁺ yield), written as a cell count."""
    return EMPTY if value is None else cells(_decimal(value).scaleb(9))


def date(value: dt.date | None) -> str:
    """A calendar date, ``2026-03-14``."""
    return EMPTY if value is None else value.strftime(DATE)


def zone_offset(moment: dt.datetime) -> str:
    """The offset from UTC of ``moment``'s zone at that moment, ``UTC+08:00`` (``UTC-05:00`` in New York in
    winter, ``UTC+05:45`` in Kathmandu, ``UTC+00:00`` for UTC)."""
    minutes = int((moment.utcoffset() or dt.timedelta(0)).total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{rest:02d}"


def date_time(moment: dt.datetime | None, tzinfo: dt.tzinfo | None = None) -> str:
    """An instant on the clock of ``tzinfo`` (a site's zone; UTC when none), ``2026-03-14 09:30 (UTC+01:00)``."""
    if moment is None:
        return EMPTY
    local = moment.astimezone(tzinfo or dt.UTC)
    return f"{local.strftime(f'{DATE} {TIME}')} ({zone_offset(local)})"


def transition(from_label: str, to_label: str) -> str:
    """A status change in words, ``Infused → Follow-up`` (``→ Screening`` for the first status)."""
    return f"{from_label} → {to_label}" if from_label else f"→ {to_label}"
