"""SDTM (SDTMIG v3.4) datasets of a trial, each as CSV (UTF-8) and as SAS transport v5 (XPT), with their
variable metadata (define.csv).

Datasets: DM, DS, SV (``special``), EX, CM (``interventions``), AE, SUPPAE, FA (``events``), LB, PC, RS
(``findings``), PP (``kinetics``: derived by the trial summary's functions). Every dataset is a fixed number
of queries, streamed row by row (``common.Context``), and every study day, course and visit comes from
``patients.timeline``: --DY counts from RFSTDTC, the first CAR-T infusion (day 0 of the protocol is SDTM day
1; the day before is -1).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from functools import partial

from exports.scope import ExportScope
from exports.sdtm import events, findings, interventions, kinetics, lb_sql, special
from exports.sdtm.codes import number_text
from exports.sdtm.common import Context, Dataset
from exports.sdtm.xpt import Value, Variable, fitted, write_xpt

DATASETS: tuple[Dataset, ...] = (*special.DATASETS[:2], *interventions.DATASETS, *events.DATASETS,
                                 *findings.DATASETS, *kinetics.DATASETS, special.DATASETS[2])
FLUSH = 64 * 1024
Writer = Callable[[Context], Iterator[bytes]]
Variables = tuple[Variable, ...]


def csv_row(row: Iterable[Value]) -> list[Value]:
    """The csv module writes None as an empty field and ints as digits; floats are written without a
    trailing ".0" (number_text)."""
    return [number_text(v) if v.__class__ is float else v for v in row]  # type: ignore[arg-type]


def _csv(header: Iterable[str], rows: Iterable[Iterable[Value]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(csv_row(row))
        if buffer.tell() >= FLUSH:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


# Datasets whose files are written from SQL (the largest), byte for byte as the generic writers write them: the
# CSV, the XPT (telling its fitted variables to a callback) and the variables fitted to the data.
Record = Callable[[Variables], None]
FROM_SQL: dict[str, tuple[Writer, Callable[[Context, Record | None], Iterator[bytes]], Callable[[Context], Variables]]]
FROM_SQL = {"LB": (lb_sql.csv_chunks, lb_sql.xpt_chunks, lb_sql.fitted),
            "PC": (lb_sql.pc_csv_chunks, lb_sql.pc_xpt_chunks, lb_sql.pc_fitted)}


def csv_chunks(dataset: Dataset, scope: ExportScope) -> Iterator[bytes]:
    """The dataset as CSV: a header of variable names, then one line per record (full UTF-8 text)."""
    if dataset.name in FROM_SQL:
        return FROM_SQL[dataset.name][0](Context(scope))
    return generic_csv_chunks(dataset, scope)


def xpt_chunks(dataset: Dataset, scope: ExportScope, record: Record | None = None) -> Iterator[bytes]:
    """The dataset as SAS transport v5, its variables fitted to the data (``fitted_variables``), which are given to
    ``record`` before the file's first bytes."""
    if dataset.name in FROM_SQL:
        return FROM_SQL[dataset.name][1](Context(scope), record)
    return generic_xpt_chunks(dataset, scope, record)


def fitted_variables(dataset: Dataset, ctx: Context) -> Variables:
    """The dataset's variables as its XPT file has them: each character variable as long as its longest value in
    the export (at least 1, at most the declared length; ``xpt.fit``)."""
    if dataset.name in FROM_SQL:
        return FROM_SQL[dataset.name][2](ctx)
    return fitted(dataset.variables, dataset.rows(ctx))


def generic_csv_chunks(dataset: Dataset, scope: ExportScope) -> Iterator[bytes]:
    return _csv([v.name for v in dataset.variables], dataset.rows(Context(scope)))


def generic_xpt_chunks(dataset: Dataset, scope: ExportScope, record: Record | None = None) -> Iterator[bytes]:
    """The generic XPT: the rows are read and held first (the datasets built in Python are small; LB and PC, the
    large ones, are written from SQL), then written with the variables fitted to them."""
    rows = list(dataset.rows(Context(scope)))
    variables = fitted(dataset.variables, rows)
    if record is not None:
        record(variables)
    return write_xpt(dataset.name, dataset.label, variables, rows)


class FittedVariables:
    """Each dataset's variables as its XPT file has them in one export: recorded as each XPT file is written, for
    define.csv (written after them) to state; computed (``fitted_variables``) for a dataset whose XPT file was not
    written."""

    def __init__(self, scope: ExportScope) -> None:
        self.scope = scope
        self.found: dict[str, Variables] = {}

    def __call__(self, dataset: Dataset) -> Variables:
        if dataset.name not in self.found:
            self.found[dataset.name] = fitted_variables(dataset, Context(self.scope))
        return self.found[dataset.name]

    def xpt_chunks(self, dataset: Dataset) -> Iterator[bytes]:
        return xpt_chunks(dataset, self.scope, partial(self.found.__setitem__, dataset.name))


DEFINE_HEADER = ("DATASET", "DATASET_LABEL", "STRUCTURE", "ORDER", "VARIABLE", "LABEL", "TYPE", "LENGTH", "COMMENT")


def define_chunks(variables_of: Callable[[Dataset], Variables]) -> Iterator[bytes]:
    """Variable metadata of every dataset: name, label, type and length (as in the XPT files: ``variables_of``
    gives each dataset's variables fitted to the export's data), and how each variable is derived where that is
    not obvious."""
    rows = ((d.name, d.label, d.structure, i, v.name, v.label, v.type, v.length, v.comment)
            for d in DATASETS for i, v in enumerate(variables_of(d), start=1))
    return _csv(DEFINE_HEADER, rows)
