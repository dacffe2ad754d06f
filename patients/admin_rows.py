"""The subject page's read-only tables, one row of HTML per record, built in Python.

Each row is the markup the page's template wrote cell by cell before, value for value: ``{{ value }}`` is
``render_value_in_context`` (the active locale's formats, escaped) and each filter is Django's own function,
called as the template called it. The template engine spent about a tenth of the page's time resolving these
cells' variables, tags and filters; ``tests/patients/test_admin_rows.py`` renders both ways and compares.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.template.base import render_value_in_context
from django.template.context import Context
from django.template.defaultfilters import date, join
from django.utils.html import format_html
from django.utils.safestring import SafeString

if TYPE_CHECKING:
    from assays.calendar import CalendarVisit

# What ``{{ value }}`` renders with on the admin's pages: autoescaping on, the active locale's formats.
_PAGE = Context()


def _v(value: Any) -> str:
    """``{{ value }}``."""
    return render_value_in_context(value, _PAGE)


def course_rows(course: Iterable[dict[str, Any]]) -> list[SafeString]:
    """The course list (``patients.admin_course.subject_course``): date, study day, course day, record, details."""
    rows = []
    for row in course:
        position = row["position"]
        study_day = _v(position.study_day) if position.study_day is not None else "—"
        course_day = (format_html("C{} D{}", _v(position.course_number), _v(position.course_day))
                      if position.course_number else "—")
        kind = format_html('<a href="{}">{}</a>', _v(row["url"]), _v(row["kind"])) if row["url"] else _v(row["kind"])
        rows.append(format_html("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                                _v(row["date"]), study_day, course_day, kind, _v(row["text"])))
    return rows


_CALENDAR_ROW = """<tr class="visit-{}" data-visit="{}" data-course="{}">
        <td>C{}{}</td><td>{} {}</td>
        <td>{}</td><td>{} to {}</td>
        <td class="visit-state">{}</td><td>{}</td>
        <td class="visit-missing">{}</td>
      </tr>"""


def calendar_rows(calendar: Iterable[CalendarVisit]) -> list[SafeString]:
    """The visit calendar (``assays.calendar.subject_calendar``): course, visit, dates, state, assays."""
    rows = []
    for v in calendar:
        number = _v(v.course_number)
        missing = format_html("<strong>missing: {}</strong>", _v(join(v.missing, ", "))) if v.missing else ""
        rows.append(format_html(
            _CALENDAR_ROW, _v(v.state), _v(v.visit.code), number, number, " (planned)" if v.planned else "",
            _v(v.visit.code), _v(v.visit.name), _v(date(v.dates.target, "Y-m-d")),
            _v(date(v.dates.earliest, "Y-m-d")), _v(date(v.dates.latest, "Y-m-d")), _v(v.state),
            _v(join(v.expected, ", ")), missing))
    return rows
