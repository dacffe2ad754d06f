"""Every admin page speaks in clinical words: no bare codes (``low_flow_nc``) and no title-cased
abbreviations (``Crs``, ``Low flow nc``). Crawled as a superuser over the demo trial: every registered
model's changelist, add page and one change page."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.test import Client
from django.urls import NoReverseMatch, reverse

from dataqueries.checks import run_checks
from tests.factories import UserFactory
from trials.models import Trial

pytestmark = pytest.mark.django_db

# Abbreviations as DOMAIN.md writes them; any other casing of them as a word is a label left to Django.
ABBREVIATIONS = ["CRS", "ICANS", "ICE", "MRD", "HSCT", "CNS", "SAE", "CTCAE", "CAPD", "BSA", "BiPAP", "CPAP",
                 "HFNC", "LOINC", "UCUM", "MedDRA", "HLA", "QC", "EMD", "ANC", "CRP", "IL-6", "ICP", "EEG", "IV",
                 "CAR", "CD3", "BCR::ABL1", "MPAL", "B-ALL", "AML", "NC"]
# Phrases Django writes from field and choice names when nobody named them.
CODE_PHRASES = ["Low flow nc", "High flow nc", "Non rebreather", "Invasive vent", "Ice score", "Icans", "Crs"]
SNAKE_CASE = re.compile(r"\b[a-z0-9]+(?:_[a-z0-9]+)+\b")  # a stored code shown as it is stored
ALLOWED_SNAKE_CASE = {"load_demo"}  # a management command's name, as the audit trail says "via command load_demo"
# Libraries' own pages (pghistory's raw event browser, login throttling, the task queue): not the product's words.
THIRD_PARTY_APPS = {"pghistory", "axes", "procrastinate"}


class VisibleText(HTMLParser):
    """The text a reader sees: no tags, attributes, scripts or styles."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._hidden += tag in ("script", "style", "textarea")

    def handle_endtag(self, tag: str) -> None:
        self._hidden -= tag in ("script", "style", "textarea") and self._hidden > 0

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = VisibleText()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


def unreadable_labels(text: str) -> list[str]:
    found = [phrase for phrase in CODE_PHRASES if re.search(rf"\b{re.escape(phrase)}\b", text)]
    for word in ABBREVIATIONS:
        pattern = rf"(?<![\w-]){re.escape(word)}(?![\w-])"
        found += [m for m in re.findall(pattern, text, flags=re.IGNORECASE) if m != word and m.lower() != m]
        found += [m for m in re.findall(pattern, text) if m != word]
    found += [m for m in SNAKE_CASE.findall(text) if m not in ALLOWED_SNAKE_CASE and not m.isdigit()
              and not re.fullmatch(r"[0-9_]+", m)]
    return found


def test_the_finder_catches_codes_and_title_cased_abbreviations() -> None:
    assert unreadable_labels("O2 device: Low flow nc; Crs assessment; death due to Icans; low_flow_nc") == [
        "Low flow nc", "Icans", "Crs", "Crs", "Icans", "low_flow_nc"]
    assert unreadable_labels("CRS assessment: low-flow nasal cannula, BiPAP, ICE score 7, MRD") == []


def admin_urls(model: Any) -> list[str]:
    info = model._meta.app_label, model._meta.model_name
    urls = [reverse(f"admin:{info[0]}_{info[1]}_changelist")]
    try:
        urls.append(reverse(f"admin:{info[0]}_{info[1]}_add"))
    except NoReverseMatch:
        pass
    first = model._default_manager.order_by("pk").first()
    if first is not None:
        try:
            urls.append(reverse(f"admin:{info[0]}_{info[1]}_change", args=[first.pk]))
        except NoReverseMatch:
            pass
    return urls


def test_no_admin_page_shows_a_code_or_a_title_cased_abbreviation() -> None:
    call_command("load_demo")
    for trial in Trial.objects.all():
        run_checks(trial)  # automatic data queries, so their pages have rows
    client = Client(raise_request_exception=False)  # a page refused with 403 is skipped, not raised
    client.force_login(UserFactory(username="root", is_superuser=True, is_staff=True))
    problems: dict[str, list[str]] = {}
    for model in admin.site._registry:
        if model._meta.app_label in THIRD_PARTY_APPS:
            continue
        for url in admin_urls(model):
            response = client.get(url)
            if response.status_code in (403, 404):
                continue  # a page the superuser is not offered (e.g. adding an audit row)
            assert response.status_code == 200, url
            found = unreadable_labels(visible_text(response.content.decode()))
            if found:
                problems[url] = sorted(set(found))
    assert problems == {}, "\n".join(f"{url}: {found}" for url, found in problems.items())
