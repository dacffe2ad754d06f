"""Times through the API: every date-time input needs a UTC offset (a naive time is a 400 on its field),
outputs carry one (UTC, ``Z``), and local dates (study day, visit window) are the site's dates on both
sides of its midnight. The factories' sites are in Asia/Shanghai (UTC+08:00)."""

from __future__ import annotations

import datetime as dt

import pytest

from assays.models import LabDraw
from patients.models import Infusion
from tests.api.support import api_client, post_json, post_results, result_row
from tests.factories import days_ago, infused_subject, lymphodepleted_subject
from trials.models import Visit

pytestmark = pytest.mark.django_db

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
NAIVE = "2026-03-01T04:00:00"


def shanghai(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=SHANGHAI)


def infusion_body(subject, infused_at: str) -> dict:
    return {"subject": subject.code, "lot": subject.lots.get().pk, "dose_level": subject.trial.dose_levels.get().pk,
            "infused_at": infused_at, "cells_per_kg": "1000000"}


def ready(world):
    return lymphodepleted_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                                  investigator=world.investigator, day0=days_ago(5))


@pytest.mark.parametrize(("url", "field"), [
    ("/api/v1/infusions/", "infused_at"),
    ("/api/v1/adverse-events/", "site_aware_at"),
    ("/api/v1/medications/", "given_at"),
])
@pytest.mark.parametrize("value", [NAIVE, "2026-03-01 04:00", "2026-03-01"])
def test_a_time_without_an_offset_is_refused_on_its_field(world, url, field, value):
    response = post_json(api_client(world.coordinator), url, {field: value})
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "invalid"
    assert any("UTC offset" in message for message in body["field_errors"][field]), body


def test_a_naive_infusion_time_writes_nothing(world):
    subject = ready(world)
    response = post_json(api_client(world.coordinator), "/api/v1/infusions/", infusion_body(subject, NAIVE))
    assert response.status_code == 400
    assert list(response.json()["field_errors"]) == ["infused_at"]
    assert not Infusion.objects.exists()


def test_an_offset_time_is_accepted_and_returned_with_an_offset(world):
    subject = ready(world)
    day0 = days_ago(5)
    posted = shanghai(day0, 4)  # 04:00 in Beijing is 20:00 UTC the day before
    response = post_json(api_client(world.coordinator), "/api/v1/infusions/",
                         infusion_body(subject, posted.isoformat()))
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["infused_at"] == f"{day0 - dt.timedelta(days=1)}T20:00:00Z"
    assert dt.datetime.fromisoformat(body["infused_at"]) == posted
    assert (body["infused_on"], body["study_day"]) == (str(day0), 0)
    assert Infusion.objects.get().infused_at == posted


def test_z_suffix_is_accepted(world):
    subject = ready(world)
    utc = dt.datetime.combine(days_ago(6), dt.time(20), tzinfo=dt.UTC)  # 04:00 on day 0 in Beijing
    response = post_json(api_client(world.coordinator), "/api/v1/infusions/",
                         infusion_body(subject, utc.isoformat().replace("+00:00", "Z")))
    assert response.status_code == 201, response.json()
    assert response.json()["infused_on"] == str(days_ago(5))


@pytest.mark.parametrize(("local_day", "hour", "minute", "utc_day"), [
    (0, 23, 30, 0),   # 23:30 in Beijing is 15:30 UTC on the same date
    (1, 0, 30, 0),    # 00:30 in Beijing is 16:30 UTC on the previous date: still the next local date
])
def test_infusion_date_is_the_sites_local_date_on_both_sides_of_midnight(world, local_day, hour, minute, utc_day):
    subject = ready(world)  # lymphodepletion ended 3 days before days_ago(5)
    base = days_ago(5)
    moment = shanghai(base + dt.timedelta(days=local_day), hour, minute)
    assert moment.astimezone(dt.UTC).date() == base + dt.timedelta(days=utc_day)
    response = post_json(api_client(world.coordinator), "/api/v1/infusions/",
                         infusion_body(subject, moment.isoformat()))
    assert response.status_code == 201, response.json()
    assert response.json()["infused_on"] == str(base + dt.timedelta(days=local_day))
    assert Infusion.objects.get().infused_on == base + dt.timedelta(days=local_day)


def test_a_draw_at_local_half_past_midnight_belongs_to_the_local_study_day_and_visit(world, lab):
    subject = infused_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                              investigator=world.investigator, day0=days_ago(5))
    for day in (3, 4):
        Visit.objects.create(trial=world.trial, code=f"D{day}", name=f"Day {day}", target_day=day)
    day0 = days_ago(5)
    late = shanghai(day0 + dt.timedelta(days=3), 23, 30)   # study day 3, 15:30 UTC
    early = shanghai(day0 + dt.timedelta(days=4), 0, 30)   # study day 4, 16:30 UTC on day 3's UTC date
    assert early.astimezone(dt.UTC).date() == day0 + dt.timedelta(days=3)
    rows = [result_row(subject, 1, accession_number="ACC-LATE", collected_at=late.isoformat()),
            result_row(subject, 2, accession_number="ACC-EARLY", collected_at=early.isoformat())]
    response = post_results(lab, {"results": rows})
    assert response.status_code == 201, response.json()
    visits = dict(LabDraw.objects.values_list("accession_number", "visit__code"))
    assert visits == {"ACC-LATE": "D3", "ACC-EARLY": "D4"}
    draw = lab.get("/api/v1/lab-draws/", {"subject__code": subject.code}).json()["results"]
    times = {d["accession_number"]: d["collected_at"] for d in draw}
    assert times["ACC-EARLY"] == f"{day0 + dt.timedelta(days=3)}T16:30:00Z"
