"""A casebook as a PDF (ReportLab platypus): a cover, every form in course order with each record's study
day, course day and audit trail, the signatures with their validity and the unresolved data queries.

Times are on the site's clock, each labelled with its UTC offset (the cover names the zone). The output is
reproducible: ReportLab's invariant mode fixes the creation date and document id, the fonts are the
Bitstream Vera faces shipped with ReportLab (no dependence on the machine's fonts), and every list is in
a fixed order, so the same data give the same bytes.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import re
import unicodedata
import zlib
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO
from xml.sax.saxutils import escape

import reportlab
from django.db import models
from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.pdfdoc import PDFArray, PDFBase85Encode, PDFName, PDFPage, PDFStream, PDFZCompress
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    BaseDocTemplate,
    CondPageBreak,
    Flowable,
    Frame,
    PageBreak,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from exports.casebook.content import RECORD, Casebook, Form, PartSpec, QueryThread, Row, TrailEntry, columns_of
from patients.timeline import Position
from signatures.models import Signature

PAGE = landscape(A4)
MARGIN = 14 * mm
WIDTH = PAGE[0] - 2 * MARGIN
FONT, BOLD, ITALIC = "CasebookVera", "CasebookVera-Bold", "CasebookVera-Italic"
DASH = "—"
ARROW = "→"


# --- fonts and text --------------------------------------------------------------------------------

@functools.cache
def _fonts() -> frozenset[int]:
    """Register the Vera faces once; the code points they draw."""
    folder = Path(reportlab.__file__).parent / "fonts"
    for name, file in ((FONT, "Vera.ttf"), (BOLD, "VeraBd.ttf"), (ITALIC, "VeraIt.ttf")):
        pdfmetrics.registerFont(TTFont(name, str(folder / file)))
    pdfmetrics.registerFontFamily(FONT, normal=FONT, bold=BOLD, italic=ITALIC, boldItalic=BOLD)
    return frozenset(pdfmetrics.getFont(FONT).face.charToGlyph)


SUBSTITUTES = {ARROW: "->", "≠": "!="}


def _drawable(char: str, glyphs: frozenset[int]) -> str:
    if ord(char) in glyphs or char in "\n\t":
        return char
    if char in SUBSTITUTES:
        return SUBSTITUTES[char]
    folded = unicodedata.normalize("NFKC", char)  # e.g. subscript and superscript digits
    if folded == char or not all(ord(c) in glyphs for c in folded):
        return "?"
    return f"^{folded}" if "SUPERSCRIPT" in unicodedata.name(char, "") else folded


@functools.cache
def _kept() -> frozenset[str]:
    """The characters drawn as they are."""
    return frozenset(map(chr, _fonts())) | {"\n", "\t"}


def drawable(value: str) -> str:
    """``value`` with each character the font lacks replaced (by its plain form, or '?')."""
    if _kept().issuperset(value):  # nearly always: no character to look at one by one
        return value
    glyphs = _fonts()
    return "".join(_drawable(c, glyphs) for c in value)


def text(value: str) -> str:
    """``value`` as Paragraph markup: drawable and escaped."""
    return escape(drawable(value)).replace("\n", "<br/>")


@functools.cache
def styles() -> dict[str, ParagraphStyle]:
    _fonts()
    base = ParagraphStyle("cell", fontName=FONT, fontSize=7.5, leading=9, alignment=TA_LEFT)
    return {
        "cell": base,
        "label": ParagraphStyle("label", parent=base, fontName=BOLD),
        "body": ParagraphStyle("body", parent=base, fontSize=9, leading=12),
        "note": ParagraphStyle("note", parent=base, fontName=ITALIC, fontSize=8, leading=10,
                               textColor=colors.HexColor("#444444")),
        "title": ParagraphStyle("title", parent=base, fontName=BOLD, fontSize=20, leading=26, spaceAfter=10),
        "h1": ParagraphStyle("h1", parent=base, fontName=BOLD, fontSize=13, leading=17, spaceBefore=8, spaceAfter=5),
        "h2": ParagraphStyle("h2", parent=base, fontName=BOLD, fontSize=9.5, leading=12, spaceBefore=7,
                             spaceAfter=3),
        "h3": ParagraphStyle("h3", parent=base, fontName=ITALIC, fontSize=8.5, leading=11, spaceBefore=4,
                             spaceAfter=2),
    }


def para(value: str, style: str = "cell") -> Paragraph:
    return Paragraph(text(value), styles()[style])


# --- values ----------------------------------------------------------------------------------------

def site_time(moment: dt.datetime | None, site: Any) -> str:
    """A time on the site's clock with its UTC offset at that moment, e.g. '2025-03-02 18:00 UTC+08:00'."""
    if moment is None:
        return DASH
    local = site.local(moment)
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M} UTC{offset[:3]}:{offset[3:]}"


def show(value: Any, site: Any) -> str:
    """A stored value as the casebook prints it."""
    if value is None or value == "" or value == []:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        return site_time(value, site)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, list | tuple):
        return ", ".join(show(v, site) for v in value)
    if isinstance(value, Decimal | int | str):
        return str(value)
    return str(value)


def field_value(obj: models.Model, field: models.Field, site: Any) -> str:
    """The field's value as shown: a choice's label, a related record's name, a time on the site's clock."""
    if field.many_to_one or field.one_to_one:
        related = getattr(obj, field.name)
        return DASH if related is None else str(related)
    value = getattr(obj, field.attname)
    choices = dict(field.flatchoices) or dict(getattr(getattr(field, "base_field", None), "flatchoices", None) or ())
    if choices and isinstance(value, list):
        return show([choices.get(v, v) for v in value], site)
    if choices and value not in (None, ""):
        return str(choices.get(value, value))
    return show(value, site)


def label_of(field: models.Field) -> str:
    name = str(field.verbose_name)
    return name[:1].upper() + name[1:]


def study_day(position: Position) -> str:
    return DASH if position.study_day is None else str(position.study_day)


def course_day(position: Position) -> str:
    if position.course_number is None:
        return DASH
    return f"course {position.course_number}, day {position.course_day}"


# --- tables ----------------------------------------------------------------------------------------

PAD = 3
GRID = [
    ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#999999")),
    ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ("FONTNAME", (0, 0), (-1, -1), FONT),
    ("FONTSIZE", (0, 0), (-1, -1), 7.5),
    ("LEADING", (0, 0), (-1, -1), 9),
    ("LEFTPADDING", (0, 0), (-1, -1), PAD),
    ("RIGHTPADDING", (0, 0), (-1, -1), PAD),
    ("TOPPADDING", (0, 0), (-1, -1), 1.5),
    ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
]
HEADER = [("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#E4E8EE"))]


def cell(value: str, width: float, style: str = "cell") -> str | Paragraph:
    """A table cell: plain text when it fits on one line (drawn by the table itself, much faster), else a
    wrapping paragraph."""
    plain = drawable(value)
    font = BOLD if style == "label" else FONT
    if "\n" not in plain and pdfmetrics.stringWidth(plain, font, 7.5) <= width - 2 * PAD - 0.5:
        return plain
    return Paragraph(text(value), styles()[style])


def grid(header: Sequence[str], rows: Iterable[Sequence[str]], widths: Sequence[float] | None = None) -> Table:
    """A table with a repeated header row; cells wrap."""
    widths = list(widths) if widths is not None else [WIDTH / len(header)] * len(header)
    data = [[cell(h, w, "label") for h, w in zip(header, widths, strict=True)],
            *([cell(c, w) for c, w in zip(row, widths, strict=True)] for row in rows)]
    table = Table(data, colWidths=widths, repeatRows=1, hAlign="LEFT", splitInRow=1)
    table.setStyle(TableStyle([*GRID, *HEADER, ("FONTNAME", (0, 0), (-1, 0), BOLD)]))
    return table


def pairs(items: Sequence[tuple[str, str]], per_line: int = 3) -> Table:
    """Label/value pairs, ``per_line`` pairs a line."""
    unit = WIDTH / per_line
    widths = [unit * 0.38, unit * 0.62]
    cells = [(cell(label, widths[0], "label"), cell(value, widths[1])) for label, value in items] or [(DASH, "")]
    rows: list[list[str | Paragraph]] = [[c for pair in cells[i:i + per_line] for c in pair]
                                         for i in range(0, len(cells), per_line)]
    rows[-1] += [""] * (2 * per_line - len(rows[-1]))
    table = Table(rows, colWidths=widths * per_line, hAlign="LEFT", splitInRow=1)
    labels = range(0, 2 * per_line, 2)
    table.setStyle(TableStyle([*GRID, *(("BACKGROUND", (c, 0), (c, -1), colors.HexColor("#F2F4F7")) for c in labels),
                               *(("FONTNAME", (c, 0), (c, -1), BOLD) for c in labels)]))
    return table


# --- audit trail -----------------------------------------------------------------------------------

ACTIONS = {"insert": "created", "update": "changed", "delete": "deleted"}
TRAIL_WIDTHS = (0.12, 0.13, 0.11, 0.07, 0.39, 0.18)


ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:\d{2}|Z)$")


def stored(value: str | None, site: Any) -> str:
    """A value as the audit trail stored it; a time (ISO 8601, UTC) on the site's clock."""
    if value is None or value == "":
        return DASH
    if ISO_TIME.match(value):
        return site_time(dt.datetime.fromisoformat(value), site)
    return value


def change_lines(entry: TrailEntry, site: Any) -> str:
    """The changed values of an update (old → new) or the values of a delete; a creation lists none (its
    values are the record's, shown above, or the old side of a later change)."""
    if entry.action == "insert":
        return "record created"
    lines = [f"{c.label}: {stored(c.old, site)} {ARROW} {stored(c.new, site)}" for c in entry.changes]
    return "\n".join(lines) or "no field changed"


def trail_table(entries: Sequence[tuple[str, TrailEntry]], site: Any) -> Table:
    """Audit entries as (record name, entry): when, who, which record, what changed, why."""
    rows = [(site_time(e.at, site), e.who, record, ACTIONS.get(e.action, e.action), change_lines(e, site),
             e.reason or DASH) for record, e in entries]
    return grid(["When (site time)", "Who", "Record", "Action", f"Changes (old {ARROW} new)", "Reason"], rows,
                [WIDTH * w for w in TRAIL_WIDTHS])


def record_name(row: Row) -> str:
    return f"{row.obj._meta.verbose_name} #{row.pk}"


def _trails(rows: Iterable[Row]) -> list[tuple[str, TrailEntry]]:
    found: list[tuple[str, TrailEntry]] = []
    for row in rows:
        found += [(record_name(row), e) for e in row.trail]
        for _part, children in row.parts:
            found += _trails(children)
    return found


def trail_flowables(rows: Sequence[Row], site: Any) -> list[Flowable]:
    entries = _trails(rows)
    if not entries:
        return [para("Audit trail: no entry recorded.", "note")]
    return [para("Audit trail", "h3"), trail_table(entries, site)]


# --- forms -----------------------------------------------------------------------------------------

def position_line(row: Row) -> str:
    if row.date is None:
        return ""
    return f": date {row.date.isoformat()} · study day {study_day(row.position)} · {course_day(row.position)}"


def record_block(row: Row, site: Any, parent: str = "") -> list[Flowable]:
    fields = columns_of(type(row.obj), None, parent)
    title = f"{record_name(row)}{position_line(row)}"
    return [CondPageBreak(40 * mm), para(title, "h2"),
            pairs([(label_of(f), field_value(row.obj, f, site)) for f in fields])]


def rows_table(spec_columns: tuple[str, ...] | None, rows: Sequence[Row], site: Any, parent: str = "",
               dated: bool = True) -> Table:
    """One line per record: its id, study day and course day (when the rows are dated), then its values."""
    if not rows:
        raise ValueError("rows_table needs rows")
    fields = columns_of(type(rows[0].obj), spec_columns, parent)
    header = ["#", *(["Study day", "Course day"] if dated else []), *(label_of(f) for f in fields)]
    lines = [[str(r.pk), *([study_day(r.position), course_day(r.position)] if dated else []),
              *(field_value(r.obj, f, site) for f in fields)] for r in rows]
    fixed = [WIDTH * 0.04, *([WIDTH * 0.05, WIDTH * 0.08] if dated else [])]
    rest = (WIDTH - sum(fixed)) / len(fields)
    return grid(header, lines, [*fixed, *([rest] * len(fields))])


def part_flowables(part: PartSpec, children: Sequence[Row], site: Any) -> list[Flowable]:
    heading = para(f"{part.title} ({len(children)})", "h3")
    if not children:
        return [heading, para("None recorded.", "note")]
    if part.style == RECORD:
        return [heading, *(f for child in children for f in record_block(child, site, part.parent))]
    return [heading, rows_table(part.columns, children, site, part.parent, dated=bool(part.dates))]


def form_flowables(form: Form, site: Any) -> Iterator[Flowable]:
    """A form's flowables, made a record at a time."""
    spec = form.spec
    yield from (CondPageBreak(50 * mm), para(f"{spec.title} ({len(form.rows)})", "h1"))
    if not form.rows:
        yield para("No record.", "note")
    elif spec.style != RECORD:
        rows = tuple(form.rows)
        yield from (rows_table(spec.columns, rows, site), *trail_flowables(rows, site))
    else:
        for row in form.rows:
            yield from record_block(row, site)
            for part, children in row.parts:
                yield from part_flowables(part, children, site)
            yield from trail_flowables([row], site)


# --- cover, signatures, queries ----------------------------------------------------------------------

def lock_state(book: Casebook) -> str:
    lock, site = book.lock, book.subject.site
    if lock is None:
        return "Open: not frozen or locked"
    state = "Locked (database lock)" if lock.level == lock.Level.LOCK else "Frozen (no data entry or change)"
    return (f"{state}: {lock.scope_label}, since {site_time(lock.locked_at, site)} by "
            f"{lock.locked_by.get_username()}; reason: {lock.reason}")


def cover(book: Casebook) -> list[Flowable]:
    subject, site, trial = book.subject, book.subject.site, book.subject.trial
    courses = ", ".join(f"course {n}: {d.isoformat()}" for n, d in enumerate(book.timeline.day0s, start=1))
    items = [
        ("Trial", f"{trial.code}: {trial.title}"),
        ("Site", f"{site.code} {site.name} ({site.country})"),
        ("Site time zone", f"{site.time_zone}; every time is on the site's clock with its UTC offset"),
        ("Subject code", subject.code),
        ("Screening number", subject.screening_number or DASH),
        ("State", subject.get_status_display()),
        ("Lock state", lock_state(book)),
        ("Data cut-off", f"{site_time(book.cutoff, site)} ({book.cutoff.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC)"),
        ("Day 0 of each course", courses or "not infused"),
    ]
    contents = [(form.spec.title, str(len(form.rows))) for form in book.forms]
    contents += [("Signatures", str(len(book.signatures))), ("Open data queries", str(len(book.queries)))]
    return [
        para(f"Casebook of subject {subject.code}", "title"),
        pairs(items, per_line=1),
        Spacer(0, 4 * mm),
        para("Study day: days from the subject's first CAR-T infusion (day 0; the day before is -1). Course day: "
             "days from day 0 of the infusion course the date follows (a re-infused subject's second course has "
             "its own day 0). Each record is followed by its audit trail: who changed which value, when, from "
             "what to what, and why.", "note"),
        Spacer(0, 4 * mm),
        para("Contents", "h2"),
        grid(["Form", "Records"], contents, [WIDTH * 0.4, WIDTH * 0.1]),
        PageBreak(),
    ]


def validity(signature: Signature, site: Any) -> str:
    if signature.is_valid:
        return "valid"
    return (f"invalid {DASH} changed since signed ({site_time(signature.invalidated_at, site)}: "
            f"{signature.invalidated_reason})")


def signature_scope(signature: Signature) -> str:
    if signature.record_type is None:
        return "casebook (all forms)"
    return f"{signature.record_type.name} #{signature.record_id}"


def signatures(book: Casebook) -> list[Flowable]:
    site = book.subject.site
    out: list[Flowable] = [CondPageBreak(40 * mm), para(f"Signatures ({len(book.signatures)})", "h1")]
    if not book.signatures:
        return [*out, para("No signature.", "note")]
    rows = [(site_time(s.signed_at, site), s.signer_name, s.get_meaning_display(), signature_scope(s),
             validity(s, site)) for s in book.signatures]
    return [*out, grid(["Signed at (site time)", "Printed name", "Meaning", "Signed", "Validity"], rows,
                       [WIDTH * w for w in (0.13, 0.17, 0.1, 0.2, 0.4)])]


def query_block(thread: QueryThread, site: Any) -> list[Flowable]:
    query = thread.query
    raised_by = query.raised_by.get_username() if query.raised_by else f"automatic check {query.check_code}"
    title = (f"Query #{query.pk} on {query.content_type.name} #{query.object_id}, field {query.field_name}: "
             f"{query.get_status_display()}")
    steps = [(site_time(m.at, site), m.by.get_username() if m.by else "automatic check", m.get_kind_display(),
              m.text or DASH) for m in thread.messages]
    return [CondPageBreak(30 * mm), para(title, "h2"),
            para(f"Raised {site_time(query.raised_at, site)} by {raised_by}: {query.text}", "cell"),
            Spacer(0, 1.5 * mm),
            grid(["At (site time)", "By", "Step", "Text"], steps, [WIDTH * w for w in (0.13, 0.13, 0.14, 0.6)])]


def queries(book: Casebook) -> list[Flowable]:
    out: list[Flowable] = [CondPageBreak(40 * mm), para(f"Open data queries ({len(book.queries)})", "h1")]
    if not book.queries:
        return [*out, para("No open data query.", "note")]
    return [*out, *(f for thread in book.queries for f in query_block(thread, book.subject.site))]


def other_trail(book: Casebook) -> list[Flowable]:
    if not book.other_trail:
        return []
    site = book.subject.site
    entries = [(f"{e.table_name} #{e.record_id}", e) for e in book.other_trail]
    return [CondPageBreak(40 * mm), para("Audit trail of other records (queries, locks, ...)", "h1"),
            trail_table(entries, site)]


# --- the document ----------------------------------------------------------------------------------

class NumberedCanvas(Canvas):
    """Draws "page N of M" once the number of pages is known, so every page waits until the end. A waiting
    page is kept as its canvas state and its drawing operators joined and compressed (as Python strings, the
    operators of a long casebook's pages took hundreds of MB), and a footed page's content stream is encoded
    at once, as ReportLab would when writing the file: the pages held are about the file's size."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pages: list[tuple[dict[str, Any], bytes | None] | None] = []

    def showPage(self) -> None:  # noqa: N802 (ReportLab's name)
        state = {name: value for name, value in self.__dict__.items() if name not in ("_code", "_pages")}
        self._pages.append((state, zlib.compress("\n".join(self._code).encode(), 1) if self._code else None))
        self._startPage()

    def save(self) -> None:
        total = len(self._pages)
        for index in range(total):
            page = self._pages[index]
            assert page is not None
            self._pages[index] = None
            state, code = page
            self.__dict__.update(state)
            # One string of the operators joined by newlines: ReportLab joins a page's operators the same way.
            self._code = [] if code is None else [zlib.decompress(code).decode()]
            self.setFont(FONT, 7.5)
            self.drawRightString(PAGE[0] - MARGIN, MARGIN / 2, f"page {index + 1} of {total}")
            super().showPage()
            _encode_stream(self._doc.Pages.pages[-1])
        super().save()


def _encode_stream(page: PDFPage) -> None:
    """Give ``page`` its content stream already encoded, exactly as ``PDFPage.check_format`` and
    ``PDFStream.format`` would encode it when the file is written (same filters, same order)."""
    if page.Contents or not page.stream or not page.compression:
        return
    filters = [PDFBase85Encode, PDFZCompress] if rl_config.useA85 else [PDFZCompress]
    content = page.stream
    for encoder in reversed(filters):
        content = encoder.encode(content)
    stream = PDFStream(content=content)
    stream.dictionary["Filter"] = PDFArray([PDFName(f.pdfname) for f in filters])
    stream.__Comment__ = "page stream"
    page.Contents, page.stream = stream, None


def _header(book: Casebook) -> Any:
    subject = book.subject
    line = drawable(f"Casebook {subject.code} · trial {subject.trial.code} · site {subject.site.code}")
    cutoff = drawable(f"data cut-off {site_time(book.cutoff, subject.site)}")

    def draw(canvas: Canvas, _doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(BOLD, 8)
        canvas.drawString(MARGIN, PAGE[1] - MARGIN / 2 - 2, line)
        canvas.setFont(FONT, 7.5)
        canvas.drawString(MARGIN, MARGIN / 2, cutoff)
        canvas.setStrokeColor(colors.HexColor("#999999"))
        canvas.line(MARGIN, PAGE[1] - MARGIN + 2 * mm, PAGE[0] - MARGIN, PAGE[1] - MARGIN + 2 * mm)
        canvas.restoreState()

    return draw


def story(book: Casebook) -> Iterator[Flowable]:
    """The document's flowables in order, made one record at a time."""
    site = book.subject.site
    yield from cover(book)
    for form in book.forms:
        yield from form_flowables(form, site)
    yield from signatures(book)
    yield from queries(book)
    yield from other_trail(book)


class Story(list[Flowable]):
    """A story that makes its flowables as ReportLab lays them out. ``BaseDocTemplate.build`` takes flowables
    from the front of its list (putting back the rest of a split one) and asks the list's length to go on, so
    the list only ever holds the flowable being laid out and what was put back, never the whole casebook.
    A flowable kept with the next one is never the last held: ReportLab groups such a run from the front of
    the list, and must see all of it and the flowable after it, as it would in the whole list."""

    def __init__(self, flowables: Iterable[Flowable]) -> None:
        super().__init__()
        self._next = iter(flowables)

    def __len__(self) -> int:
        while not super().__len__() or self[-1].getKeepWithNext():
            more = next(self._next, None)
            if more is None:
                break
            self.append(more)
        return super().__len__()


def write_casebook(book: Casebook, file: BinaryIO) -> None:
    """Write the casebook's PDF to ``file`` (the same data always give the same bytes)."""
    subject = book.subject
    doc = BaseDocTemplate(
        file, pagesize=PAGE, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN, bottomMargin=MARGIN,
        title=f"Casebook {subject.code}", author=f"{subject.trial.code} {subject.site.code}",
        subject=f"Case report forms of {subject.code}", creator="CAR-T trial data backend", invariant=1,
    )
    frame = Frame(MARGIN, MARGIN, WIDTH, PAGE[1] - 2 * MARGIN, id="body", leftPadding=0, rightPadding=0,
                  topPadding=0, bottomPadding=0)
    doc.addPageTemplates([PageTemplate(id="casebook", frames=[frame], onPage=_header(book))])
    doc.build(Story(story(book)), canvasmaker=NumberedCanvas)


def render_casebook(book: Casebook) -> bytes:
    """The casebook's PDF bytes (the same data always give the same bytes)."""
    buffer = io.BytesIO()
    write_casebook(book, buffer)
    return buffer.getvalue()
