"""The seeded catalogue measures each target antigen on blasts that the trial summaries read
(summaries.definitions.antigen_analyte), in % of blasts."""

from __future__ import annotations

import pytest

from assays.models import Analyte
from summaries.definitions import antigen_analyte

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("antigen", ["CD19", "CD22", "CD38"])
def test_the_catalogue_holds_the_antigen_on_blasts_analyte_in_percent(antigen):
    analyte = Analyte.objects.get(code=antigen_analyte(antigen))
    assert (analyte.canonical_unit, analyte.physiological_low, analyte.physiological_high) == ("%", 0, 100)
    assert analyte.name.startswith(f"{antigen}+ blasts") and analyte.loinc == ""
    assert list(analyte.units.values_list("unit", "factor")) == [("%", 1.0)]
    assert sorted(analyte.specimens) == ["bm", "pb"]
