"""CSV: one file per case report form, ``csv/<form name>.csv`` (header row, then one row per record, columns
as in ``exports.crf``), and ``csv/data_dictionary.csv`` (form, variable, label, type, unit, code list as
``code=decode`` pairs joined by `` | ``). UTF-8 without a byte order mark, comma-separated, RFC 4180 quoting,
CRLF line ends (the csv module's default). Written chunk by chunk: memory does not grow with the rows."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING

from exports.crf import Form, forms, text
from exports.formats import ExportFile, register
from exports.formats.csv_results import DRAWS_FORM_NAME, FORM_NAME, draws_chunks, results_chunks

if TYPE_CHECKING:
    from exports.scope import ExportScope

ROWS_PER_CHUNK = 1000
# The forms whose size grows with the results, written by PostgreSQL (``exports.formats.csv_results``).
FROM_SQL: dict[str, Callable[[list[str], ExportScope], Iterator[bytes]]] = {
    FORM_NAME: results_chunks, DRAWS_FORM_NAME: draws_chunks}
MEDIA_TYPE = "text/csv; charset=utf-8"
DICTIONARY_HEADER = ("form", "variable", "label", "type", "unit", "codelist")


def _chunks(header: Iterable[str], rows: Iterable[Iterable[str]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
        if count % ROWS_PER_CHUNK == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


def form_chunks(form: Form, scope: ExportScope) -> Iterator[bytes]:
    """A form's file; those of ``FROM_SQL`` are written by PostgreSQL (``exports.formats.csv_results``)."""
    if form.name in FROM_SQL:
        return FROM_SQL[form.name]([c.name for c in form.columns], scope)
    return generic_form_chunks(form, scope)


def generic_form_chunks(form: Form, scope: ExportScope) -> Iterator[bytes]:
    columns = form.columns
    rows = ([text(row[c.name]) for c in columns] for row in form.rows(scope))
    return _chunks([c.name for c in columns], rows)


def dictionary_rows() -> Iterator[list[str]]:
    for form in forms():
        for item in form.columns:
            codes = " | ".join(f"{code}={decode}" for code, decode in item.codelist)
            yield [form.name, item.name, item.label, item.type, item.unit, codes]


class CsvFormat:
    code = "csv"
    label = "CSV (one file per case report form, with a data dictionary)"

    def files(self, scope: ExportScope) -> list[ExportFile]:
        files = [ExportFile(f"csv/{form.name}.csv", partial(form_chunks, form, scope), MEDIA_TYPE)
                 for form in forms()]
        files.append(ExportFile("csv/data_dictionary.csv", partial(_chunks, DICTIONARY_HEADER, dictionary_rows()),
                                MEDIA_TYPE))
        return files


CSV = register(CsvFormat())
