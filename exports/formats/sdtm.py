"""The SDTM export: each dataset of ``exports.sdtm`` as ``sdtm/<domain>.csv`` and ``sdtm/<domain>.xpt``
(SAS transport v5), and ``sdtm/define.csv`` (variable metadata, with each XPT variable's length: the longest
value of the variable in the export)."""

from __future__ import annotations

from functools import partial

from exports.formats import ExportFile, register
from exports.scope import ExportScope
from exports.sdtm import DATASETS, FittedVariables, csv_chunks, define_chunks


class SdtmFormat:
    code = "sdtm"
    label = "SDTM datasets (CSV and SAS transport v5)"

    def files(self, scope: ExportScope) -> list[ExportFile]:
        fitted = FittedVariables(scope)  # each XPT file's lengths, fitted to the data as it is written
        files = []
        for dataset in DATASETS:
            stem = f"sdtm/{dataset.name.lower()}"
            files.append(ExportFile(f"{stem}.csv", partial(csv_chunks, dataset, scope), "text/csv"))
            files.append(ExportFile(f"{stem}.xpt", partial(fitted.xpt_chunks, dataset), "application/x-sas-xport"))
        # Last: it states the lengths the XPT files were written with.
        return [*files, ExportFile("sdtm/define.csv", partial(define_chunks, fitted), "text/csv")]


SDTM = register(SdtmFormat())
