"""Template filters of ``config.display``, built into every template (settings ``TEMPLATES["OPTIONS"]``)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django import template
from django.utils import timezone

from config import display

register = template.Library()


@register.filter
def cells(value: Decimal | float | int | None) -> str:
    return display.cells(value)


@register.filter
def cells_per_kg(value: Decimal | float | int | None) -> str:
    return display.cells_per_kg(value)


@register.filter
def date_shown(value: dt.date | None) -> str:
    return display.date(value)


@register.filter
def date_time_shown(value: dt.datetime | None, zone: dt.tzinfo | None = None) -> str:
    """On ``zone``, else on the page's clock (the record's site on its change page, else UTC)."""
    return display.date_time(value, zone or timezone.get_current_timezone())
