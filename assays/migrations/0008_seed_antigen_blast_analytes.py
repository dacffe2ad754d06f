"""Seed the target-antigen expression analytes that the trial summaries read (summaries.definitions
``antigen_analyte``: ``<ANTIGEN>_BLASTS``, % of blasts): CD19 and CD22, beside the CD38 one that
0002_seed_catalogue seeded. Same style as that seed: canonical unit "%" (factor 1), plausibility 0-100,
bone marrow or peripheral blood. No LOINC: DOMAIN gives none for these.

BCMA is not seeded: it is measured on plasma cells (myeloma), not on blasts, so a BCMA_BLASTS analyte would
misname what a laboratory reports.

Imports no app code. An analyte already in the catalogue under one of these codes (added by hand) is left
as it is; the reverse deletes the analytes of these codes that no result refers to.
"""

from django.db import migrations

PB, BM = "pb", "bm"

ANALYTES = [
    {"code": "CD19_BLASTS", "name": "CD19+ blasts by flow cytometry (% of blasts)"},
    {"code": "CD22_BLASTS", "name": "CD22+ blasts by flow cytometry (% of blasts)"},
]


def seed(apps, schema_editor):
    Analyte = apps.get_model("assays", "Analyte")
    AnalyteUnit = apps.get_model("assays", "AnalyteUnit")
    for row in ANALYTES:
        if Analyte.objects.filter(code=row["code"]).exists():
            continue
        created = Analyte.objects.create(code=row["code"], name=row["name"], canonical_unit="%", loinc="",
                                         physiological_low=0, physiological_high=100, specimens=[BM, PB])
        AnalyteUnit.objects.create(analyte=created, unit="%", factor=1.0)


def unseed(apps, schema_editor):
    Analyte = apps.get_model("assays", "Analyte")
    Result = apps.get_model("assays", "Result")
    codes = [row["code"] for row in ANALYTES]
    used = Result.objects.filter(analyte__code__in=codes).values_list("analyte__code", flat=True)
    Analyte.objects.filter(code__in=codes).exclude(code__in=list(used)).delete()


class Migration(migrations.Migration):

    dependencies = [("assays", "0007_results_statement_integrity")]

    operations = [migrations.RunPython(seed, unseed)]
