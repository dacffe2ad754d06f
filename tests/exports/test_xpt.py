"""The SAS transport v5 writer, read back by pyreadstat and by pandas."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyreadstat
import pytest

from exports.sdtm.xpt import (
    BUFFER,
    MISSING,
    Variable,
    ascii_text,
    encoded,
    fit,
    fitted,
    header,
    ibm_float,
    ibm_floats,
    observations,
    row_encoder,
    text_table,
    text_width,
    write_xpt,
)

VARIABLES = (
    Variable("STUDYID", "Study Identifier", "Char", 30),
    Variable("USUBJID", "Unique Subject Identifier", "Char", 60),
    Variable("LBSTRESN", "Numeric Result/Finding in Standard Units", "Num"),
    Variable("LBTEST", "Lab Test or Examination Name", "Char", 12),
    Variable("LBDY", "Study Day of Specimen Collection", "Num"),
)
ROWS = [
    ("T001", "T001-SA-SA-0001", 0.4, "Neutrophils", -3),
    ("T001", "T001-SA-SA-0001", None, "", 1),
    ("T001", "T001-SA-SA-0002", -1.5e-12, "µg ≥ 10⁹/L", None),
    ("T001", "T001-SA-SA-0002", 123456789.125, "Fièvre", 8),
    ("T001", "T001-SA-SA-0003", 0.0, "a much longer text than fits", 0),
]


PANDAS_ZERO = 2.0 ** -260  # pandas reads an IBM zero (all zero bytes) as 16**-65, the smallest IBM number


def zero_read_as_zero(values: list[float]) -> list[float]:
    """pandas' XPORT reader has no case for zero: it turns 0 into 5.4e-79; pyreadstat reads 0."""
    return [0.0 if x == PANDAS_ZERO else x for x in values]


def written(tmp_path: Path, rows: list[tuple] = ROWS, variables: tuple[Variable, ...] = VARIABLES) -> Path:
    path = tmp_path / "lb.xpt"
    path.write_bytes(b"".join(write_xpt("LB", "Laboratory Test Results", variables, rows)))
    return path


def test_the_file_is_80_byte_records_with_the_v5_headers(tmp_path: Any) -> None:
    content = written(tmp_path).read_bytes()
    assert len(content) % 80 == 0
    records = [content[i:i + 80] for i in range(0, 80 * 8, 80)]
    assert records[0] == b"HEADER RECORD*******LIBRARY HEADER RECORD!!!!!!!" + b"0" * 30 + b"  "
    assert records[1].startswith(b"SAS     SAS     SASLIB  9.4     ")
    assert records[3] == b"HEADER RECORD*******MEMBER  HEADER RECORD!!!!!!!000000000000000001600000000140  "
    assert records[5][8:16] == b"LB      "
    assert records[6][32:72] == b"Laboratory Test Results".ljust(40)
    assert records[7] == b"HEADER RECORD*******NAMESTR HEADER RECORD!!!!!!!000000000500000000000000000000  "
    # 5 NAMESTRs of 140 bytes, padded to 9 records, then the OBS header.
    obs = 80 * 8 + 80 * 9
    assert content[obs:obs + 80] == b"HEADER RECORD*******OBS     HEADER RECORD!!!!!!!" + b"0" * 30 + b"  "
    row_length = 30 + 60 + 8 + 12 + 8
    assert len(content) == obs + 80 + math.ceil(row_length * len(ROWS) / 80) * 80


def test_the_file_does_not_depend_on_when_it_is_written(tmp_path: Any) -> None:
    assert written(tmp_path).read_bytes() == b"".join(write_xpt("LB", "Laboratory Test Results", VARIABLES, ROWS))


@pytest.mark.parametrize("reader", ["pyreadstat", "pandas"])
def test_both_readers_read_names_labels_types_and_values(tmp_path: Any, reader: Any) -> None:
    path = written(tmp_path)
    if reader == "pyreadstat":
        frame, meta = pyreadstat.read_xport(str(path))
        assert meta.table_name == "LB" and meta.file_label == "Laboratory Test Results"
        assert meta.column_names_to_labels == {v.name: v.label for v in VARIABLES}
        assert meta.readstat_variable_types == {v.name: "double" if v.numeric else "string" for v in VARIABLES}
        assert meta.variable_storage_width == {v.name: v.length for v in VARIABLES}
    else:
        frame = pd.read_sas(path, format="xport", encoding="ascii")
        assert [v.name for v in VARIABLES if str(frame.dtypes[v.name]) == "float64"] == ["LBSTRESN", "LBDY"]
    assert list(frame.columns) == [v.name for v in VARIABLES]
    assert list(frame["LBTEST"]) == ["Neutrophils", "", "ug >= 10^9/L", "Fievre", "a much longer"[:12]]
    assert list(frame["USUBJID"])[2] == "T001-SA-SA-0002"
    values = zero_read_as_zero(list(frame["LBSTRESN"]))
    assert values[0] == 0.4 and math.isnan(values[1]) and values[2] == -1.5e-12 and values[3] == 123456789.125
    assert values[4] == 0.0
    days = zero_read_as_zero(list(frame["LBDY"]))
    assert days[:2] == [-3, 1] and math.isnan(days[2]) and days[3:] == [8, 0]


def test_ibm_floats_are_exact_for_any_double(tmp_path: Any) -> None:
    rng = random.Random(11)
    numbers = [rng.uniform(-1, 1) * 10 ** rng.randint(-70, 70) for _ in range(2000)]
    numbers += [1.0, -1.0, 0.1, 1 / 3, 2 ** -260, 2 ** 250, 1e-75, 7e75, 1e-5, 52000.0, 0.001]
    rows = [("T", "U", x, "", float(i)) for i, x in enumerate(numbers)]
    frame, _meta = pyreadstat.read_xport(str(written(tmp_path, rows)))
    assert list(frame["LBSTRESN"]) == numbers
    read = pd.read_sas(written(tmp_path, rows), format="xport", encoding="ascii")["LBSTRESN"]
    assert list(read) == numbers  # no zero among them: see zero_read_as_zero


def test_known_ibm_encodings() -> None:
    assert ibm_float(1.0) == bytes.fromhex("4110000000000000")
    assert ibm_float(-118.625) == bytes.fromhex("C276A00000000000")
    assert ibm_float(0.0) == bytes(8)
    assert ibm_float(1e-300) == bytes(8)  # below 16**-65: underflows to zero
    assert ibm_float(None) == ibm_float(float("nan")) == MISSING == b"." + bytes(7)
    with pytest.raises(ValueError):
        ibm_float(float("inf"))
    with pytest.raises(ValueError):
        ibm_float(1e300)  # beyond 16**63


def edge_doubles() -> list[float]:
    """Zeros, NaNs, powers of 2 and 16 and their neighbours (where the hexadecimal exponent steps), the underflow
    and overflow bounds, subnormals, and doubles of random bits over the whole range."""
    rng = random.Random(16)
    steps = [2.0 ** e for e in range(-1074, 1024)] + [16.0 ** e for e in range(-65, 64)]
    around = [y for x in steps for y in (x, math.nextafter(x, 0), math.nextafter(x, math.inf))]
    special = [0.0, -0.0, math.nan, -math.nan, 5e-324, -5e-324, 2.2250738585072014e-308, 1 - 2 ** -53, 0.1, 1 / 3,
               15.999999999999998, 16 ** -65, 16 ** 63, math.nextafter(16.0 ** 63, 0), 7.237005577332262e75]
    bits = [struct.unpack(">d", rng.getrandbits(64).to_bytes(8, "big"))[0] for _ in range(200_000)]
    uniform = [rng.uniform(-1, 1) * 10.0 ** rng.randint(-80, 80) for _ in range(50_000)]
    return [x for x in special + around + bits + uniform + [-x for x in around] if not math.isinf(x)]


def test_vectorised_ibm_floats_are_ibm_float_of_every_double() -> None:
    values, too_large = [], []
    for x in edge_doubles():
        try:
            ibm_float(x)
        except ValueError:
            too_large.append(x)
        else:
            values.append(x)
    assert len(values) > 100_000 and len(too_large) > 10_000 and min(map(abs, too_large)) == 16.0 ** 63
    assert ibm_floats(values).tobytes() == b"".join(map(ibm_float, values))
    for x in too_large[:50] + [math.inf, -math.inf]:
        with pytest.raises(ValueError, match="infinite" if math.isinf(x) else "too large"):
            ibm_floats([1.0, x])


def test_vectorised_ibm_floats_take_whole_numbers_and_none_as_missing() -> None:
    numbers: list[Any] = [None, 0, 1, -1, 7, 2 ** 53 + 1, -(10 ** 20), 16 ** 10, 12.5, None]
    assert ibm_floats(np.array(numbers, dtype=np.float64)).tobytes() == b"".join(map(ibm_float, numbers))
    assert ibm_floats(np.array([None, math.nan], dtype=np.float64)).tobytes() == MISSING * 2


def as_fields(rows: list[tuple[Any, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows as ``observations`` takes them (as PostgreSQL's ``record_send`` gives them): each value's bytes after a
    field header, numbers as big-endian doubles, texts in UTF-8, None as NULL (size -1)."""
    data, starts, sizes = bytearray(), [], []
    for row in rows:
        for value in row:
            raw = None if value is None else value.encode() if isinstance(value, str) else struct.pack(">d", value)
            data += b"\xff" * 8
            starts.append(len(data))
            sizes.append(-1 if raw is None else len(raw))
            data += raw or b""
    shape = (len(rows), len(VARIABLES))
    return (np.frombuffer(bytes(data), dtype=np.uint8), np.array(starts, dtype=np.intp).reshape(shape).T,
            np.array(sizes, dtype=np.intp).reshape(shape).T)


def test_observations_of_a_chunk_are_the_rows_encoded_one_by_one() -> None:
    rng = random.Random(3)
    texts: list[Any] = ["", None, "Neutrophils", "a much longer text than fits", "Fièvre ≥ 39 °C", "白细胞",
                        "  padded  ", "x" * 12, "\r\n\ttabs", "ß" * 7, "é" * 12, "x" * 11 + "é", "é" + "x" * 40]
    numbers: list[Any] = [None, 0, -3, 0.4, -1.5e-12, math.nan, 123456789.125, 2 ** 60, 1e-300, -0.0]
    fitting = [t for t in texts if t is None or (t.isascii() and len(t) <= 12)]  # these fit every variable

    def row(pool: list[Any]) -> tuple[Any, ...]:
        return (rng.choice(pool), rng.choice(pool), rng.choice(numbers), rng.choice(pool), rng.choice(numbers))

    encode = row_encoder(VARIABLES)
    for pool in (fitting, texts):  # ASCII that fits, then texts to transliterate or to cut
        rows = [row(pool) for _ in range(5000)]
        assert observations(VARIABLES, *as_fields(rows)) == b"".join(map(encode, rows))
    assert observations(VARIABLES, *as_fields([])) == b""


def test_observations_of_fitted_variables_are_the_rows_encoded_one_by_one() -> None:
    """The vectorised and the row-by-row encoders agree at any lengths, here 1 to 7 bytes (values cut or padded)."""
    rng = random.Random(5)
    texts: list[Any] = ["", None, "N", "Neutrophils", "Fièvre ≥ 39 °C", "白细胞", "  padded  ", "ß" * 7]
    rows = [(rng.choice(texts), rng.choice(texts), rng.choice([None, 0.4, -3]), rng.choice(texts), 1.0)
            for _ in range(2000)]
    for widths in ([1, 1, 0, 1, 0], [3, 7, 0, 5, 0]):
        variables = fit(VARIABLES, widths)
        assert [v.length for v in variables] == [max(1, w) if not v.numeric else 8 for v, w in zip(
            VARIABLES, widths, strict=True)]
        assert observations(variables, *as_fields(rows)) == b"".join(map(row_encoder(variables), rows))


def test_a_text_table_copied_into_any_wider_columns_is_the_rows_encoded_one_by_one() -> None:
    """``text_table`` encodes a batch's texts before the file's widths are known: each column as wide as its longest
    value as written (transliterated, which may lengthen a text, then cut at the declared length). Copied into the
    blank columns of the file's variables, as wide or wider (fitted to every batch), each value is ``row_encoder``'s."""
    rng = random.Random(11)
    texts: list[Any] = ["", None, "N", "Neutrophils", "39 °C", "°°°°°°", "≥ 10⁹/L", "白细胞", "  padded  ",
                        "x" * 11 + "é", "é" * 12, "é" + "x" * 40, "\r\n\ttabs"]
    rows = [(rng.choice(texts), rng.choice(texts), 0.5, rng.choice(texts), 1.0) for _ in range(3000)]
    columns = [j for j, v in enumerate(VARIABLES) if not v.numeric]
    declared = np.array([VARIABLES[j].length for j in columns], dtype=np.intp)
    data, starts, sizes = as_fields(rows)
    table, widths = text_table(data, starts[columns].T, sizes[columns].T, declared)
    longest = [min(VARIABLES[j].length, max(text_width(row[j]) for row in rows)) for j in columns]
    assert list(widths) == longest and longest == [30, 41, 12]
    assert table.shape == (len(rows), sum(longest))
    source = 0
    for j, width in zip(columns, widths, strict=True):
        limit = VARIABLES[j].length  # the batch's own width, then wider up to the declared length
        for length in {max(1, int(width)), int(width) + 1, (int(width) + limit) // 2, limit} - {limit + 1}:
            column = np.full((len(rows), length), 0x20, dtype=np.uint8)
            column[:, :width] = table[:, source:source + width]
            encode = row_encoder([Variable(VARIABLES[j].name, VARIABLES[j].label, "Char", length)])
            assert column.tobytes() == b"".join(encode([row[j]]) for row in rows), (VARIABLES[j].name, length)
        source += int(width)
    # A small batch: a column as wide as its value as written ("°C", 3 bytes of UTF-8, is "degC"), one of empty
    # texts and NULLs has no width.
    short = [("T1", "", 0.5, "ab", 1.0), ("°C", None, 0.5, None, 1.0)]
    data, starts, sizes = as_fields(short)
    table, widths = text_table(data, starts[columns].T, sizes[columns].T, declared)
    assert list(widths) == [4, 0, 2] and table.tobytes() == b"T1  ab" + b"degC  "


def test_encoded_tables_are_the_rows_encoded_one_by_one() -> None:
    """The lines the SQL-written datasets gather their draw's and test's variables from (``encoded``: each distinct
    value of a column encoded once) are ``row_encoder``'s, NaN and repeated values included."""
    rng = random.Random(7)
    texts: list[Any] = ["", None, "N", "Neutrophils", "Fièvre ≥ 39 °C", "白细胞", "x" * 70, 12, 12.0, 0.0, -0.0, "1"]
    numbers: list[Any] = [None, 0, -3, 0.4, math.nan, float("nan"), 2 ** 60, -0.0, 1, 1.0, True]
    rows = [(rng.choice(texts), rng.choice(texts), rng.choice(numbers), rng.choice(texts), rng.choice(numbers))
            for _ in range(3000)]
    for variables in (VARIABLES, fit(VARIABLES, [3, 7, 0, 5, 0])):
        table = encoded(variables, rows)
        assert table.shape == (len(rows), sum(v.length for v in variables))
        assert table.tobytes() == b"".join(map(row_encoder(variables), rows))
    assert encoded(VARIABLES, []).shape == (0, 118)
    assert encoded((), [(), ()]).shape == (2, 0)


def test_fitted_lengths_are_the_longest_value_as_written_within_the_declared_length() -> None:
    variables = fitted(VARIABLES, ROWS)
    # STUDYID: "T001"; USUBJID: 15 characters; LBTEST: "ug >= 10^9/L" (12 once transliterated: 10 characters
    # in UTF-8) and a longer text, cut at the declared 12 as before.
    assert [(v.name, v.length) for v in variables] == [
        ("STUDYID", 4), ("USUBJID", 15), ("LBSTRESN", 8), ("LBTEST", 12), ("LBDY", 8)]
    assert [v.length for v in fitted(VARIABLES, [("µ°", "x" * 70, 1.0, "Fièvre", 2)])] == [4, 60, 8, 6, 8]
    assert [v.length for v in fitted(VARIABLES, [(None, "", None, None, None)])] == [1, 1, 8, 1, 8]
    assert fitted(VARIABLES, []) == fit(VARIABLES, [0] * len(VARIABLES))
    grade = Variable("LBTOXGR", "Standard Toxicity Grade", "Char", 2)
    assert fitted((grade,), [(3,), (None,)])[0].length == 1  # a number in a character variable: its digits


@pytest.mark.parametrize("reader", ["pyreadstat", "pandas"])
def test_a_file_of_fitted_variables_reads_back_with_its_widths_and_the_same_values(tmp_path: Any, reader: Any
                                                                                   ) -> None:
    variables = fitted(VARIABLES, ROWS)
    path = written(tmp_path, ROWS, variables)
    if reader == "pyreadstat":
        frame, meta = pyreadstat.read_xport(str(path))
        assert meta.variable_storage_width == {v.name: v.length for v in variables}
    else:
        frame = pd.read_sas(path, format="xport", encoding="ascii")
    (tmp_path / "declared").mkdir()
    declared = pd.read_sas(written(tmp_path / "declared", ROWS, VARIABLES), format="xport", encoding="ascii")
    for v in VARIABLES:
        if not v.numeric:
            assert list(frame[v.name]) == list(declared[v.name]), v.name
    assert list(frame["LBTEST"]) == ["Neutrophils", "", "ug >= 10^9/L", "Fievre", "a much longer"[:12]]


def test_observations_refuse_numbers_that_are_not_doubles() -> None:
    data, starts, sizes = as_fields([("T", "U", "0.4", "", 1)])  # a text where a number goes
    with pytest.raises(ValueError, match="8-byte doubles"):
        observations(VARIABLES, data, starts, sizes)


def test_non_ascii_text_is_transliterated() -> None:
    assert ascii_text("Fièvre ≥ 39 °C, 10⁹/L, µg, naïve") == "Fievre >= 39 degC, 10^9/L, ug, naive"
    assert ascii_text("白细胞") == "???"
    assert ascii_text("plain") == "plain"


@pytest.mark.parametrize("bad", [
    lambda: Variable("lbtest", "Lower case"), lambda: Variable("LBTESTCODE", "Nine characters"),
    lambda: Variable("LBTEST", "x" * 41), lambda: Variable("LBTEST", "Ünicode label"),
    lambda: Variable("LBTEST", "Too long", "Char", 201), lambda: Variable("AGE", "Age", "Num", 4),
])
def test_names_labels_and_lengths_outside_v5_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        bad()


def test_a_duplicate_name_or_a_long_dataset_name_is_refused() -> None:
    with pytest.raises(ValueError):
        header("LB", "x", [VARIABLES[0], VARIABLES[0]])
    with pytest.raises(ValueError):
        header("LABORATORY", "x", VARIABLES)


def test_text_in_a_numeric_variable_is_refused() -> None:
    with pytest.raises(TypeError):
        b"".join(write_xpt("LB", "x", VARIABLES, [("T", "U", "0.4", "", 1)]))


def test_rows_are_written_as_they_come_in_bounded_chunks() -> None:
    consumed = 0

    def rows() -> Iterator[tuple[Any, ...]]:
        nonlocal consumed
        for i in range(50_000):
            consumed += 1
            yield ("T001", f"T001-SA-{i:06d}", float(i), "Neutrophils", i)

    chunks = write_xpt("LB", "x", VARIABLES, rows())
    first = next(chunks)
    assert consumed < 1000  # the first chunk does not wait for the whole dataset
    sizes = [len(first)] + [len(c) for c in chunks]
    assert consumed == 50_000 and max(sizes) < BUFFER + 200
