"""Every analyte of the seeded catalogue gets its own valid SDTM test code (LBTESTCD / PCTESTCD)."""

from __future__ import annotations

import pytest

from assays.models import Analyte
from exports.sdtm.codes import TESTCD_PATTERN
from exports.sdtm.codes import testcd_of as sdtm_test_code

pytestmark = pytest.mark.django_db


def test_seeded_catalogue_codes_map_to_distinct_valid_test_codes() -> None:
    codes = list(Analyte.objects.values_list("code", flat=True))
    testcds = [sdtm_test_code(code) for code in codes]
    assert len(codes) > 20
    assert all(TESTCD_PATTERN.match(t) for t in testcds), [t for t in testcds if not TESTCD_PATTERN.match(t)]
    assert len(set(testcds)) == len(testcds)


def test_antigen_on_blasts_analytes_have_readable_test_codes() -> None:
    assert {sdtm_test_code("CD19_BLASTS"), sdtm_test_code("CD22_BLASTS"), sdtm_test_code("CD38_BLASTS")} == {
        "CD19BLST", "CD22BLST", "CD38BLST"}
    assert sdtm_test_code("MARROW_BLASTS") == "BLASTS"
