"""A streaming writer of SAS transport files, version 5 (the XPORT format FDA accepts for SDTM datasets).

The whole file is 80-byte records: a library header, a member header with one 140-byte NAMESTR per
variable, then the observations back to back, the last record padded with blanks. Numbers are 8-byte
IBM System/370 floating point (big-endian, base 16, excess-64 exponent); a missing number is the SAS
missing value ``.`` (0x2E followed by seven zero bytes). Text is fixed-width and blank-padded.

Rows are written as they come from an iterator, so a dataset of any size takes constant memory; the
variables (and so each character variable's width) are known before the first row. ``fitted`` gives a dataset's
variables with each character variable as long as its longest value (as written: transliterated, at least 1 byte,
at most the declared length), which the FDA Technical Conformance Guide asks of submitted transport files.

Version 5 is ASCII: names have at most 8 characters, labels at most 40, text at most 200 bytes. Text
that is not ASCII is transliterated (``ascii_text``): a few symbols are spelled out (µ → u, ° → deg,
≥ → >=, ×10⁹ → x10^9), other characters lose their accents by compatibility decomposition (é → e,
ﬁ → fi), and any character still not ASCII (e.g. Chinese text) becomes ``?``. A value longer than its
variable is cut at the variable's length. The CSV twin of a dataset keeps the original UTF-8 text.

``observations`` encodes a chunk of rows column by column with numpy (the SQL-written datasets: thousands of rows
of PostgreSQL's binary COPY at a time), byte for byte as ``row_encoder`` encodes them one by one.

The header dates are fixed (1 January 1960, SAS's epoch), so that a file depends only on its data.

Two limits of pandas' XPORT reader (pyreadstat has neither): it reads a zero (all zero bytes, as SAS
writes it) as 5.4e-79, and for observations of 80 bytes or less it takes blank 8-byte words of the last
record for padding and may drop the last rows. Every SDTM dataset's observation is longer than 80
bytes (STUDYID and USUBJID alone are 112).
"""

from __future__ import annotations

import math
import re
import struct
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

RECORD = 80
BUFFER = 64 * 1024
NAME_PATTERN = re.compile(r"^[A-Z_][A-Z0-9_]{0,7}$")
MISSING = b"." + bytes(7)
ZERO = bytes(8)
MISSING_WORD = np.uint64(int.from_bytes(MISSING, "big"))
BLANK = 0x20
FIXED_DATE = b"01JAN60:00:00:00"
HEADER = b"HEADER RECORD*******%-8sHEADER RECORD!!!!!!!%s"

Value = str | int | float | None

# Symbols that decomposition does not turn into ASCII (or turns into something misleading).
SPELLED = {"µ": "u", "μ": "u", "°": "deg", "≥": ">=", "≤": "<=", "×": "x", "–": "-", "—": "-", "’": "'",
           "‘": "'", "“": '"', "”": '"', "±": "+/-", "ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O",
           "⁹": "^9", "⁶": "^6", "³": "^3", "²": "2", "\u00a0": " "}


@dataclass(frozen=True, slots=True)
class Variable:
    """One variable of a dataset: 8-character name, 40-character label, type and (character) length."""

    name: str
    label: str
    type: Literal["Char", "Num"] = "Char"
    length: int = 8
    comment: str = ""

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ValueError(f"{self.name!r} is not a SAS v5 name (8 characters: capitals, digits, _).")
        if len(self.label) > 40 or not self.label.isascii():
            raise ValueError(f"The label of {self.name} must be ASCII and at most 40 characters.")
        if self.type == "Num" and self.length != 8:
            raise ValueError(f"{self.name}: numeric variables are 8 bytes.")
        if self.type == "Char" and not 1 <= self.length <= 200:
            raise ValueError(f"{self.name}: character variables are 1 to 200 bytes.")

    @property
    def numeric(self) -> bool:
        return self.type == "Num"


def ascii_text(text: str) -> str:
    """``text`` in ASCII for a v5 transport file (see the module docstring)."""
    if text.isascii():
        return text
    out = []
    for char in text:
        if char.isascii():
            out.append(char)
        elif char in SPELLED:
            out.append(SPELLED[char])
        else:
            plain = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
            out.append(plain if plain and plain.isascii() else "?")
    return "".join(out)


@lru_cache(maxsize=8192)  # study days, visit numbers, ranges and doses repeat from row to row
def ibm_float(value: float | int | None) -> bytes:
    """``value`` as an 8-byte IBM 370 double; None and NaN are the SAS missing value ``.``.

    An IEEE double's 53-bit mantissa always fits the IBM 56-bit fraction after the hexadecimal
    normalisation shift of at most 3 bits, so the conversion is exact."""
    if value is None:
        return MISSING
    x = float(value)
    if math.isnan(x):
        return MISSING
    if x == 0:
        return ZERO
    if math.isinf(x):
        raise ValueError("A transport file cannot hold an infinite number.")
    sign = 0x80 if x < 0 else 0
    mantissa, exponent = math.frexp(abs(x))  # abs(x) = mantissa * 2**exponent, 0.5 <= mantissa < 1
    hex_exponent = -(-exponent // 4)  # ceil(exponent / 4)
    shift = 4 * hex_exponent - exponent  # 0..3
    fraction = int(mantissa * (1 << 53)) << (3 - shift)  # 56-bit fraction, exact
    biased = hex_exponent + 64
    if biased > 127:
        raise ValueError(f"{x!r} is too large for an IBM 370 double.")
    if biased < 0:
        return ZERO  # below 16**-64: underflows to zero
    return bytes([sign | biased]) + fraction.to_bytes(7, "big")


def ibm_floats(values: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    """``ibm_float`` of every value at once: big-endian 8-byte words (``>u8``); NaN is the missing value."""
    x = np.asarray(values, dtype=np.float64)
    if np.isinf(x).any():
        raise ValueError("A transport file cannot hold an infinite number.")
    missing = np.isnan(x)
    magnitude = np.abs(np.where(missing, 0.0, x))
    mantissa, exponent = np.frexp(magnitude)  # as ibm_float: 0.5 <= mantissa < 1 (0 for 0)
    hex_exponent = -(-exponent // 4)
    shift = (4 * hex_exponent - exponent).astype(np.uint64)
    fraction = (mantissa * float(1 << 53)).astype(np.uint64) << (np.uint64(3) - shift)
    biased = hex_exponent.astype(np.int64) + 64
    if (too_large := biased > 127).any():
        raise ValueError(f"{float(x[too_large][0])!r} is too large for an IBM 370 double.")
    sign = np.signbit(x).astype(np.uint64) << np.uint64(63)
    words = sign | (np.maximum(biased, 0).astype(np.uint64) << np.uint64(56)) | fraction
    words[(magnitude == 0) | (biased < 0)] = 0  # zero, and below 16**-64 (underflow)
    words[missing] = MISSING_WORD
    return words.astype(">u8")


def observations(variables: Sequence[Variable], data: npt.NDArray[np.uint8], starts: npt.NDArray[np.intp],
                 sizes: npt.NDArray[np.intp]) -> bytes:
    """Rows given variable by variable as places in ``data``, encoded at once, byte for byte as ``row_encoder``
    encodes them one by one. ``starts[j, i]`` and ``sizes[j, i]`` place the value of variable ``j`` in row ``i``
    (size -1: NULL): a number as an IEEE big-endian double (8 bytes), a text in UTF-8. The SQL-written datasets
    encode their rows with the same pieces (``ibm_numbers``, ``text_table``, ``place_table``), a batch's texts
    before the file's lengths are known (``exports.sdtm.lb_sql``)."""
    offsets = np.cumsum([0] + [v.length for v in variables[:-1]])
    out = np.full((starts.shape[1], sum(v.length for v in variables)), BLANK, dtype=np.uint8)
    for j, variable in enumerate(variables):
        if variable.numeric:
            out[:, offsets[j]:offsets[j] + 8] = ibm_numbers(data, starts[j], sizes[j]).view(np.uint8).reshape(-1, 8)
    texts = [j for j, v in enumerate(variables) if not v.numeric]
    if texts:
        table, widths = text_table(data, starts[texts].T, sizes[texts].T,
                                   np.array([variables[j].length for j in texts], dtype=np.intp))
        place_table(out, [int(offsets[j]) for j in texts], table, widths)
    return out.tobytes()


def place_table(out: npt.NDArray[np.uint8], offsets: Sequence[int], table: npt.NDArray[np.uint8],
                widths: Sequence[int] | npt.NDArray[np.intp]) -> None:
    """A ``text_table``'s columns (``widths``) into their blank places in ``out``, each at least as wide, from
    ``offsets``."""
    source = 0
    for offset, width in zip(offsets, widths, strict=True):
        out[:, offset:offset + width] = table[:, source:source + width]
        source += width


def encoded(variables: Sequence[Variable], rows: Sequence[Sequence[Value]]) -> npt.NDArray[np.uint8]:
    """The rows encoded as ``row_encoder`` encodes them, one line of bytes per row (a table to gather from), column
    by column: each distinct value of a column is encoded once."""
    columns = []
    for j, variable in enumerate(variables):
        encode = row_encoder([variable])
        column: list[Value] = [row[j] for row in rows]
        if not variable.numeric:  # a text is written as its str: 1 and 1.0, 0.0 and -0.0 are not the same text
            column = [value if value is None or isinstance(value, str) else str(value) for value in column]
        known = {value: encode([value]) for value in set(column)}  # a number is written as its float
        data = b"".join([known[value] if value in known else encode([value]) for value in column])  # NaN is not NaN
        columns.append(np.frombuffer(data, dtype=np.uint8).reshape(len(rows), variable.length))
    if not columns:
        return np.empty((len(rows), 0), dtype=np.uint8)
    return np.hstack(columns)


def ibm_numbers(data: npt.NDArray[np.uint8], starts: npt.NDArray[np.intp], sizes: npt.NDArray[np.intp]
                ) -> npt.NDArray[np.uint64]:
    """The numbers at ``starts`` in ``data`` (IEEE big-endian doubles; size -1: NULL, missing) as ``ibm_floats``."""
    present = sizes == 8
    if not (present | (sizes == -1)).all():
        raise ValueError("Numbers must come as 8-byte doubles.")
    return ibm_floats(np.where(present, unaligned(data, ">f8")[np.where(present, starts, 0)], np.nan))


def unaligned(data: npt.NDArray[np.uint8], dtype: str) -> npt.NDArray[Any]:
    """``data`` read as ``dtype`` at every byte offset: ``unaligned(data, ">i4")[k]`` is the big-endian 32-bit
    integer in ``data[k:k + 4]``."""
    size = np.dtype(dtype).itemsize
    return np.ndarray((max(len(data) - size + 1, 0),), dtype=dtype, buffer=data, strides=(1,))


def text_table(data: npt.NDArray[np.uint8], starts: npt.NDArray[np.intp], sizes: npt.NDArray[np.intp],
               lengths: npt.NDArray[np.intp]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.intp]]:
    """Texts given as places in ``data`` (row ``i``'s value of column ``j`` at ``starts[i, j]``, ``sizes[i, j]``
    bytes of UTF-8, -1 for NULL) as a table of blank-padded columns, each as wide as its longest value as ``_text``
    writes it (transliterated when not ASCII, cut at ``lengths[j]``): the table, then the width of each column. A
    column copied into a wider blank one holds each value as ``row_encoder`` writes it, whatever the column's final
    width (``place_table``): the table can be made before the widths of the whole file are known."""
    kept = np.clip(sizes, 0, lengths)
    bound = max(len(data), kept.size * int(lengths.max(initial=0)))
    kept_bytes = data[_spread(starts, kept, bound)]
    if len(cells := _not_ascii(kept, kept_bytes)):
        data, starts, sizes = _transliterated(data, starts, sizes, cells)
        kept = np.clip(sizes, 0, lengths)
        bound = max(len(data), bound)
        kept_bytes = data[_spread(starts, kept, bound)]
    widths = kept.max(axis=0, initial=0)
    table = np.full((len(kept), int(widths.sum())), BLANK, dtype=np.uint8)
    places = np.arange(len(kept))[:, None] * table.shape[1] + (np.cumsum(widths) - widths)
    table.reshape(-1)[_spread(places, kept, bound)] = kept_bytes
    return table, widths


def _spread(starts: npt.NDArray[np.intp], kept: npt.NDArray[np.intp], bound: int) -> npt.NDArray[Any]:
    """The place of every kept byte, row by row: ``kept[i, j]`` places from ``starts[i, j]`` (places below
    ``bound``: 32-bit when they can be, half the memory to go through)."""
    kept = kept.ravel()
    first = np.cumsum(kept) - kept
    index = np.int32 if bound < 2 ** 31 else np.int64
    every = np.arange(first[-1] + kept[-1] if len(kept) else 0, dtype=index)
    spread = np.repeat((starts.ravel() - first).astype(index), kept)
    spread += every
    return spread


def _not_ascii(kept: npt.NDArray[np.intp], kept_bytes: npt.NDArray[np.uint8]) -> npt.NDArray[np.intp]:
    """The values (``kept``'s cells, row by row) whose kept bytes (``kept_bytes``, as ``_spread`` gathers them) are
    not all ASCII."""
    if kept_bytes.max(initial=0) < 0x80:
        return np.empty(0, dtype=np.intp)
    kept = kept.ravel()
    return np.unique(np.searchsorted(np.cumsum(kept) - kept, np.flatnonzero(kept_bytes >= 0x80), side="right") - 1)


def _transliterated(data: npt.NDArray[np.uint8], starts: npt.NDArray[np.intp], sizes: npt.NDArray[np.intp],
                    cells: npt.NDArray[np.intp]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.intp],
                                                          npt.NDArray[np.intp]]:
    """``data`` with the whole text of each of ``cells`` (row by row) transliterated (``ascii_text``) after it, and
    the places with those cells' moved there."""
    starts, sizes = starts.copy(), sizes.copy()
    added: list[bytes] = []
    end = len(data)
    for k in cells:
        row, column = divmod(int(k), starts.shape[1])
        start = int(starts[row, column])
        text = ascii_text(data[start:start + int(sizes[row, column])].tobytes().decode("utf-8")).encode("ascii")
        starts[row, column], sizes[row, column] = end, len(text)
        added.append(text)
        end += len(text)
    return np.concatenate([data, np.frombuffer(b"".join(added), dtype=np.uint8)]), starts, sizes


def text_width(value: Value) -> int:
    """Bytes the value takes in a character variable before it is cut (``_text``): 0 for None and ""."""
    if value is None or value == "":
        return 0
    text = value if isinstance(value, str) else str(value)
    return len(text) if text.isascii() else len(ascii_text(text))


def fit(variables: Sequence[Variable], widths: Sequence[int]) -> tuple[Variable, ...]:
    """The variables with each character variable's length set to the width of its longest value (``widths``, in
    variable order; numbers are ignored): at least 1, at most the declared length (longer text is still cut)."""
    return tuple(v if v.numeric else replace(v, length=max(1, min(v.length, width)))
                 for v, width in zip(variables, widths, strict=True))


def fitted(variables: Sequence[Variable], rows: Iterable[Sequence[Value]]) -> tuple[Variable, ...]:
    """The variables fitted (``fit``) to the longest value of each character variable in ``rows``."""
    widths = [0] * len(variables)
    texts = [j for j, v in enumerate(variables) if not v.numeric]
    for row in rows:
        for j in texts:
            if (width := text_width(row[j])) > widths[j]:
                widths[j] = width
    return fit(variables, widths)


def _header(kind: bytes, tail: bytes = b"0" * 30) -> bytes:
    return (HEADER % (kind, tail)).ljust(RECORD)


def _text(value: str, width: int) -> bytes:
    try:
        encoded = value.encode("ascii")
    except UnicodeEncodeError:
        encoded = ascii_text(value).encode("ascii")
    return encoded[:width].ljust(width)


def _namestr(number: int, variable: Variable, position: int) -> bytes:
    return struct.pack(
        ">hhhh8s40s8shhh2s8shhl52s",
        1 if variable.numeric else 2, 0, variable.length, number, _text(variable.name, 8), _text(variable.label, 40),
        b" " * 8, 0, 0, 0, b"\0\0", b" " * 8, 0, 0, position, bytes(52))


def _pad(block: bytes, fill: bytes = b" ") -> bytes:
    return block + fill * (-len(block) % RECORD)


def header(dataset: str, label: str, variables: Sequence[Variable]) -> bytes:
    """Library header, member header and NAMESTR records of one dataset."""
    if not NAME_PATTERN.match(dataset):
        raise ValueError(f"{dataset!r} is not a SAS v5 dataset name.")
    names = [v.name for v in variables]
    if len(set(names)) != len(names):
        raise ValueError(f"{dataset}: duplicate variable names.")
    positions, position = [], 0
    for variable in variables:
        positions.append(position)
        position += variable.length
    parts = [
        _header(b"LIBRARY"),
        b"SAS     SAS     SASLIB  9.4     " + b"X64_7PRO" + b" " * 24 + FIXED_DATE,
        FIXED_DATE.ljust(RECORD),
        _header(b"MEMBER", b"000000000000000001600000000140"),
        _header(b"DSCRPTR"),
        b"SAS     " + _text(dataset, 8) + b"SASDATA " + b"9.4     " + b"X64_7PRO" + b" " * 24 + FIXED_DATE,
        FIXED_DATE + b" " * 16 + _text(label, 40) + b" " * 8,
        _header(b"NAMESTR", b"000000%04d00000000000000000000" % len(variables)),
        _pad(b"".join(_namestr(i, v, p) for i, (v, p) in enumerate(zip(variables, positions, strict=True), 1))),
        _header(b"OBS"),
    ]
    return b"".join(parts)


def row_encoder(variables: Sequence[Variable]) -> Callable[[Sequence[Value]], bytes]:
    """A function turning one row (values in variable order) into its observation bytes."""
    spec = [(v.name, v.numeric, v.length, b" " * v.length) for v in variables]

    def encode(row: Sequence[Value]) -> bytes:
        parts = []
        for (name, numeric, width, blank), value in zip(spec, row, strict=True):
            if numeric:
                if isinstance(value, str):
                    raise TypeError(f"{name} is numeric; got the text {value!r}.")
                parts.append(ibm_float(value))
            elif value is None or value == "":
                parts.append(blank)
            else:
                parts.append(_text(value if isinstance(value, str) else str(value), width))
        return b"".join(parts)

    return encode


def write_xpt(dataset: str, label: str, variables: Sequence[Variable], rows: Iterable[Sequence[Value]]
              ) -> Iterator[bytes]:
    """The transport file of one dataset, in chunks of about 64 KiB."""
    encode = row_encoder(variables)
    buffer = bytearray(header(dataset, label, variables))
    written = 0
    for row in rows:
        encoded = encode(row)
        buffer += encoded
        written += len(encoded)
        if len(buffer) >= BUFFER:
            yield bytes(buffer)
            buffer.clear()
    buffer += b" " * (-written % RECORD)
    yield bytes(buffer)
