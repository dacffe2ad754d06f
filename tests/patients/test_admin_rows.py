"""The subject page's tables built in Python (``patients.admin_rows``) are the markup its template wrote cell by
cell, the reads compiled once (``config.compiled``) give what iterating the queryset gives, and an empty error
list and a select render as Django's without its templates."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django import forms
from django.forms.utils import ErrorList
from django.template import engines
from django.utils import translation
from django.utils.translation import gettext_lazy

from assays.calendar import CalendarVisit
from config.compiled import compiled
from config.forms import QuietErrorList, Select
from patients.admin_rows import calendar_rows, course_rows
from patients.models import Infusion, Subject
from patients.selectors import doses_of, records_of
from patients.timeline import NOWHERE, Position, VisitDates
from tests.desk_support import infused_on
from tests.factories import days_ago
from trials.models import Visit

# The loops as the subject page's template had them (config/templates/admin/patients/subject/change_form.html).
COURSE_TEMPLATE = """{% for row in course %}
      <tr><td>{{ row.date }}</td><td>{% if row.position.study_day is not None %}{{ row.position.study_day }}{% else %}—{% endif %}</td><td>{% if row.position.course_number %}C{{ row.position.course_number }} D{{ row.position.course_day }}{% else %}—{% endif %}</td><td>{% if row.url %}<a href="{{ row.url }}">{{ row.kind }}</a>{% else %}{{ row.kind }}{% endif %}</td><td>{{ row.text }}</td></tr>
    {% endfor %}"""  # noqa: E501

CALENDAR_TEMPLATE = """{% for v in calendar %}
      <tr class="visit-{{ v.state }}" data-visit="{{ v.visit.code }}" data-course="{{ v.course_number }}">
        <td>C{{ v.course_number }}{% if v.planned %} (planned){% endif %}</td><td>{{ v.visit.code }} {{ v.visit.name }}</td>
        <td>{{ v.dates.target|date:"Y-m-d" }}</td><td>{{ v.dates.earliest|date:"Y-m-d" }} to {{ v.dates.latest|date:"Y-m-d" }}</td>
        <td class="visit-state">{{ v.state }}</td><td>{{ v.expected|join:", " }}</td>
        <td class="visit-missing">{% if v.missing %}<strong>missing: {{ v.missing|join:", " }}</strong>{% endif %}</td>
      </tr>
    {% endfor %}"""  # noqa: E501


def as_rows(rows: list[Any]) -> str:
    return "".join(f"\n      {row}\n    " for row in rows)


def rendered(template: str, **context: Any) -> str:
    return engines["django"].from_string(template).render(context)


COURSE = [
    {"date": dt.date(2026, 3, 1), "position": Position(-9, None, None), "kind": "Consent",
     "text": "Consent v1 <draft> & co", "url": "/admin/patients/consent/1/change/?a=1&b=2"},
    {"date": dt.date(2026, 3, 10), "position": Position(0, 1, 0), "kind": "Infusion", "text": "1.0 × 10⁶ cells/kg",
     "url": ""},
    {"date": dt.date(2027, 3, 10), "position": Position(1234, 2, 12), "kind": "O'Brien \"x\"", "text": "", "url": "/x"},
    {"date": dt.date(2026, 2, 1), "position": NOWHERE, "kind": "Apheresis", "text": "Collection AP-1", "url": "/y"},
]


@pytest.mark.parametrize("language", ["en-gb", "en"])
def test_course_rows_are_the_templates_markup(language: str) -> None:
    with translation.override(language):
        assert as_rows(course_rows(COURSE)) == rendered(COURSE_TEMPLATE, course=COURSE)


def test_calendar_rows_are_the_templates_markup() -> None:
    visit = Visit(code="D28", name="Day 28 <response>")
    dates = VisitDates(dt.date(2026, 4, 7), dt.date(2026, 4, 1), dt.date(2026, 4, 14))
    calendar = [
        CalendarVisit(Subject(), 1, False, visit, dates, "done", ("CRP", "IL6"), ()),
        CalendarVisit(Subject(), 2, True, visit, dates, "overdue", ("CAR_QPCR",), ("CAR_QPCR",)),
        CalendarVisit(Subject(), 12, False, visit, dates, "upcoming", (), ("A&B", "<C>")),
    ]
    assert as_rows(calendar_rows(calendar)) == rendered(CALENDAR_TEMPLATE, calendar=calendar)


def fields(obj: Any) -> dict[str, Any]:
    return {name: value for name, value in obj.__dict__.items() if name != "_state"}


@pytest.mark.django_db
def test_compiled_reads_give_what_the_queryset_gives(world: Any) -> None:
    subject = infused_on(world, days_ago(10))
    infusions = records_of(subject, "infusions", "lot", "dose_level")
    expected = list(subject.infusions.select_related("lot", "dose_level").order_by("course_number", "fraction_number"))
    assert infusions and [fields(i) for i in infusions] == [fields(i) for i in expected]
    assert [(fields(i.lot), fields(i.dose_level)) for i in infusions] == [
        (fields(i.lot), fields(i.dose_level)) for i in expected]
    assert all(i.subject is subject for i in infusions)  # as the reverse relation sets it: no query for it
    doses = doses_of(subject)
    assert doses and [(fields(d), fields(d.agent), fields(d.course)) for d in doses] == [
        (fields(d), fields(d.agent), fields(d.course)) for d in subject.ld_courses.get().doses
        .select_related("agent", "course").order_by("given_on", "agent__agent")]


@pytest.mark.django_db
def test_a_compiled_read_takes_only_its_value() -> None:
    with pytest.raises(ValueError, match="one parameter"):
        compiled("two parameters", lambda value: Infusion.objects.filter(subject_id=value, fraction_number=2))


def test_an_empty_quiet_error_list_renders_nothing_and_a_full_one_as_djangos() -> None:
    assert (str(QuietErrorList()), QuietErrorList().as_ul(), QuietErrorList().as_text()) == (
        str(ErrorList()), ErrorList().as_ul(), ErrorList().as_text()) == ("", "", "")
    errors = ["Required when a saved value is changed.", "<b>"]
    quiet, django = QuietErrorList(errors, field_id="id_reason"), ErrorList(errors, field_id="id_reason")
    assert (str(quiet), quiet.as_ul(), quiet.as_text(), quiet.__html__()) == (
        str(django), django.as_ul(), django.as_text(), django.__html__())
    assert "&lt;b&gt;" in str(quiet)


@pytest.mark.parametrize("value", [None, "", "M", 3, "<x>"])
def test_the_select_is_djangos_markup(value: Any) -> None:
    choices = [("", "---------"), ("M", "Male"), ("F", "Female & <other>"), (3, 3),
               ("Group <g>", [("a", "A"), ("<x>", dt.date(2026, 3, 1))]), (2, gettext_lazy("Unknown"))]
    attrs = {"id": "id_sex", "required": True, "disabled": False, "data-x": 'a"b', "aria-describedby": "id_sex_help"}
    ours, django = Select(choices=choices), forms.Select(choices=choices)
    with translation.override("en-gb"):
        assert ours.render("sex", value, attrs) == django.render("sex", value, attrs)
        assert ours.render("sex", value) == django.render("sex", value)
