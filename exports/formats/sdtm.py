"""The SDTM export: each dataset of ``exports.sdtm`` as ``sdtm/<domain>.csv`` and ``sdtm/<domain>.xpt``
(SAS transport v5), and ``sdtm/define.csv`` (variable metadata)."""

from __future__ import annotations

from functools import partial

from exports.formats import ExportFile, register
from exports.scope import ExportScope
from exports.sdtm import DATASETS, csv_chunks, define_chunks, xpt_chunks


class SdtmFormat:
    code = "sdtm"
    label = "SDTM datasets (CSV and SAS transport v5)"

    def files(self, scope: ExportScope) -> list[ExportFile]:
        files = [ExportFile("sdtm/define.csv", define_chunks, "text/csv")]
        for dataset in DATASETS:
            stem = f"sdtm/{dataset.name.lower()}"
            files.append(ExportFile(f"{stem}.csv", partial(csv_chunks, dataset, scope), "text/csv"))
            files.append(ExportFile(f"{stem}.xpt", partial(xpt_chunks, dataset, scope), "application/x-sas-xport"))
        return files


SDTM = register(SdtmFormat())
