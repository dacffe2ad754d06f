"""Reads whose SQL Django compiles once per process and thread, for pages that make many small reads.

Compiling a queryset (resolving its filters, joins, ordering and select list) costs 0.2-0.8 ms of Python, several
times what PostgreSQL takes to run a read of one subject's rows by an index. A page that makes a dozen such reads
(the admin's subject page) spent more time compiling them than running them. ``compiled(key, build)`` compiles
``build(0)`` once and then runs the same SQL with another value in place of the 0, turning each row into model
instances (with their ``select_related`` rows) exactly as iterating the queryset does, with Django's own
converters and populators.

Only for querysets whose single parameter is the value passed (checked when compiled: a queryset with any
other parameter is refused) and that yield model instances.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.query import get_related_populators  # type: ignore[attr-defined]  # not in django-stubs
from django.db.models.sql.compiler import SQLCompiler

_PLACEHOLDER = 0


class CompiledRead:
    """``build(value)``'s rows, from the SQL Django compiled for ``build(0)``."""

    def __init__(self, queryset: QuerySet[Any]) -> None:
        self.db = queryset.db
        self.compiler: SQLCompiler = queryset.query.get_compiler(using=self.db)
        self.sql, params = self.compiler.as_sql()
        if tuple(params) != (_PLACEHOLDER,):
            raise ValueError(f"A compiled read takes one parameter, its value; this one has {params!r}.")

    def rows(self, value: Any) -> list[Any]:
        """The model instances ``list(build(value))`` gives (``django.db.models.query.ModelIterable``)."""
        compiler = self.compiler
        with connections[self.db].cursor() as cursor:
            cursor.execute(self.sql, [value])
            fetched = cursor.fetchall()
        if compiler.has_extra_select:  # columns selected only for the ordering (execute_sql drops them too)
            fetched = [row[:compiler.col_count] for row in fetched]
        select, klass_info, annotations = compiler.select, compiler.klass_info, compiler.annotation_col_map
        assert klass_info is not None  # a queryset of model instances
        model: type[Model] = klass_info["model"]
        start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        names = [column[0].target.attname for column in select[start:end]]
        populators = get_related_populators(klass_info, select, self.db)
        found = []
        for row in compiler.results_iter([fetched]):
            obj = model.from_db(self.db, names, row[start:end])
            for populator in populators:
                populator.populate(row, obj)
            for name, position in (annotations or {}).items():
                setattr(obj, name, row[position])
            found.append(obj)
        return found


# Per thread: a compiler keeps the connection it was compiled for (its converters), and connections are per thread.
_local = threading.local()


def compiled(key: Hashable, build: Callable[[Any], QuerySet[Any]]) -> CompiledRead:
    """The read ``build`` makes, compiled the first time ``key`` is asked for in this thread."""
    reads: dict[Hashable, CompiledRead] = _local.__dict__.setdefault("reads", {})
    if key not in reads:
        reads[key] = CompiledRead(build(_PLACEHOLDER))
    return reads[key]
