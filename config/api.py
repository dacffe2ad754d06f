"""API plumbing shared by every app: one error body, token authentication, pagination, the acting user.

Every error is ``{"code", "message", "field_errors"}``: input errors 400, state conflicts 409,
permission 403, absent (or out-of-scope) records 404.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.paginator import EmptyPage, Page, PageNotAnInteger
from django.core.paginator import Paginator as DjangoPaginator
from django.db import models
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils.dateparse import parse_datetime
from django.utils.functional import cached_property
from django.views.defaults import page_not_found as django_page_not_found
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import exceptions, pagination, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from config.errors import DomainError, RuleViolation

logger = logging.getLogger("config.api")


def acting_user(request: Request | HttpRequest) -> User:
    """The person or service account's user behind an API or admin request.

    Never AnonymousUser: the API and the admin require a login before any view runs, so the refusal
    below only narrows the type for services, which record the user as ``by``.
    """
    user = request.user
    if not isinstance(user, User) or not user.is_authenticated:
        raise PermissionDenied("Log in first.")
    return user


def error_body(code: str, message: str, field_errors: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "field_errors": field_errors or {}}


def is_json(request: Request) -> bool:
    """True if the request declares a JSON body (``application/json``, any parameters such as charset)."""
    return (request.content_type or "").split(";", 1)[0].strip().lower() == "application/json"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        set_rollback()
        errors = getattr(exc, "field_errors", None) or ({exc.field: [exc.message]} if exc.field else {})
        return Response(error_body(exc.code, exc.message, errors), status=exc.http_status)
    if isinstance(exc, DjangoValidationError):  # full_clean() inside a service
        exc = exceptions.ValidationError(detail=as_serializer_error(exc))
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        return server_error(exc, context)
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body("invalid", "Invalid input.", flat_field_errors(response.data))
    elif isinstance(exc, exceptions.APIException):
        code = exc.get_codes()
        response.data = error_body(code if isinstance(code, str) else exc.default_code, str(exc.detail))
    return response


def flat_field_errors(detail: Any, path: str = "") -> dict[str, list[str]]:
    """DRF's nested errors as ``{path: [message, ...]}``: a list item's field is ``doses[0].unit``, a dict
    entry's ``answers.I1``, the body's own ``non_field_errors``; items without an error are left out."""
    if isinstance(detail, dict):
        flat: dict[str, list[str]] = {}
        for key, inner in detail.items():
            step = f"[{key}]" if isinstance(key, int) else (f".{key}" if path else str(key))
            flat.update(flat_field_errors(inner, f"{path}{step}"))
        return flat
    if isinstance(detail, list) and any(isinstance(item, (dict, list)) for item in detail):
        flat = {}
        for index, inner in enumerate(detail):
            flat.update(flat_field_errors(inner, f"{path}[{index}]"))
        return flat
    messages = detail if isinstance(detail, list) else [detail]
    return {path or "non_field_errors": [str(message) for message in messages]} if messages else {}


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's 404 (a path no route matches, e.g. an id with a dot): the API's error body under /api/."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return django_page_not_found(request, exception)


def server_error(exc: Exception, context: dict[str, Any]) -> Response:
    """An unexpected error: logged with its traceback, answered 500 in the API's error shape with the
    request id (the X-Request-ID header) to quote, never Django's HTML page."""
    set_rollback()
    request = getattr(context.get("request"), "_request", context.get("request"))
    request_id = getattr(request, "audit_request_id", None) or str(uuid.uuid4())
    if request is not None:
        request.audit_request_id = request_id  # the audit middleware sends it back as X-Request-ID
    logger.error("Unhandled API error (request %s)", request_id, exc_info=exc)
    return Response(error_body("server_error", f"Internal error; quote request id {request_id}.",
                               {"request_id": [request_id]}), status=500)


def _ascii_only(to_internal_value: Callable[..., Any]) -> Callable[..., Any]:
    """Python's int(), float(), Decimal() and the date parsers take any script's digits ("١٢" is 12): a
    number, date or time sent as text is ASCII or invalid."""

    def strict(self: serializers.Field, data: Any) -> Any:
        if isinstance(data, str) and not data.isascii():
            self.fail("invalid", format="ISO 8601")  # the date fields' message names a format
        return to_internal_value(self, data)

    return strict


for _field in (serializers.IntegerField, serializers.FloatField, serializers.DecimalField, serializers.DateField,
               serializers.DateTimeField, serializers.TimeField, serializers.DurationField):
    _field.to_internal_value = _ascii_only(_field.to_internal_value)  # type: ignore[method-assign]


class OffsetDateTimeField(serializers.DateTimeField):
    """ISO 8601 with a UTC offset, in and out.

    A time without an offset is refused: on whose clock would it be? Times are returned in UTC (``Z``);
    a client shows them on the site's clock (the subject's site carries its IANA time zone).
    """

    default_error_messages = {
        "offset_required": "Give the time with its UTC offset, e.g. 2026-03-01T04:00:00+08:00 or "
                           "2026-02-28T20:00:00Z.",
    }

    def to_internal_value(self, value: Any) -> dt.datetime:
        if isinstance(value, dt.datetime):
            naive = value.tzinfo is None
        else:
            try:
                parsed = parse_datetime(str(value).strip())
            except ValueError:  # a well-formed but impossible time: the parent's "invalid" says so
                parsed = None
            naive = parsed is not None and parsed.tzinfo is None
        if naive:
            self.fail("offset_required")
        return super().to_internal_value(value)

    # DRF's DateTimeField answers None for no value; its stubs declare str.
    def to_representation(self, value: Any) -> str | None:  # type: ignore[override]
        if not value:
            return None
        if isinstance(value, str):
            return value
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# Every ModelSerializer's date-time fields take and give offsets (declared fields use the class directly).
serializers.ModelSerializer.serializer_field_mapping[models.DateTimeField] = OffsetDateTimeField


class BlankAsNullChoiceField(serializers.ChoiceField):
    """A choice a model leaves blank: ``null`` in answers (not ``""``, which is no choice of the enumeration);
    ``null`` or ``""`` in input stores the blank."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allow_null = True
        self.allow_blank = not self.read_only  # answers never hold ""

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        return super().validate_empty_values("" if data is None else data)

    def to_representation(self, value: Any) -> Any:
        return None if value in ("", None) else super().to_representation(value)


_build_standard_field = serializers.ModelSerializer.build_standard_field


def _build_choice_field(self: serializers.ModelSerializer, field_name: str, model_field: models.Field) -> Any:
    field_class, kwargs = _build_standard_field(self, field_name, model_field)
    if field_class is serializers.ChoiceField and model_field.blank and not model_field.null:
        field_class = BlankAsNullChoiceField
    return field_class, kwargs


serializers.ModelSerializer.build_standard_field = _build_choice_field  # type: ignore[method-assign]


COUNT_CAP = 10_000  # a list counts its rows up to here; above it ``count`` is this and a lower bound


class BoundedCountPaginator(DjangoPaginator):
    """Django's paginator, counting at most ``cap`` + 1 rows (``COUNT(*)`` over a ``LIMIT`` subquery), so a page
    costs the same whatever the list's size. Up to the cap it is Django's own paginator; above it ``count`` is
    the cap (a lower bound) and a page looks one row ahead to know whether another follows."""

    cap = COUNT_CAP

    @cached_property
    def counted(self) -> int:
        if isinstance(self.object_list, QuerySet):  # any cap + 1 rows will do: no ORDER BY to honour
            return self.object_list.order_by()[: self.cap + 1].count()
        return len(self.object_list[: self.cap + 1])

    @property
    def capped(self) -> bool:
        return self.counted > self.cap

    @cached_property
    def count(self) -> int:
        return min(self.counted, self.cap)

    def validate_number(self, number: Any) -> int:
        if not self.capped:
            return super().validate_number(number)
        try:  # no last page to check against: any page from 1 (an empty one is refused by ``page``)
            number = int(number)
        except (TypeError, ValueError) as exc:
            raise PageNotAnInteger(self.error_messages["invalid_page"]) from exc
        if number < 1:
            raise EmptyPage(self.error_messages["min_page"])
        return number

    def page(self, number: Any) -> Page:
        if not self.capped:
            return super().page(number)
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        rows = list(self.object_list[bottom:bottom + self.per_page + 1])
        if not rows:
            raise EmptyPage(self.error_messages["no_results"])
        return LookaheadPage(rows[:self.per_page], number, self, more=len(rows) > self.per_page)


class LookaheadPage(Page):
    """A page of a list counted only up to the cap: whether another page follows is read, not computed."""

    def __init__(self, rows: list[Any], number: int, paginator: DjangoPaginator, *, more: bool) -> None:
        super().__init__(rows, number, paginator)
        self.more = more

    def has_next(self) -> bool:
        return self.more


class StablePagination(pagination.PageNumberPagination):
    """Page numbers, with a bounded count (README "API overview"): ``count`` is exact up to ``COUNT_CAP`` rows;
    above, it is the cap and ``count_is_lower_bound`` is true, and the pages are followed by ``next``."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    django_paginator_class = BoundedCountPaginator

    def get_page_number(self, request: Request, paginator: DjangoPaginator) -> Any:
        number = super().get_page_number(request, paginator)
        if isinstance(paginator, BoundedCountPaginator) and paginator.capped and (
                request.query_params.get(self.page_query_param) in self.last_page_strings):
            raise exceptions.NotFound(f"The last page of a list of more than {paginator.cap:,} rows is not "
                                      "counted; follow the next links.")
        return number

    def get_paginated_response(self, data: Any) -> Response:
        assert self.page is not None  # set by paginate_queryset, which DRF calls first
        paginator = self.page.paginator
        return Response({"count": paginator.count,
                         "count_is_lower_bound": isinstance(paginator, BoundedCountPaginator) and paginator.capped,
                         "next": self.get_next_link(), "previous": self.get_previous_link(), "results": data})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        answer = super().get_paginated_response_schema(schema)
        answer["properties"] = {
            "count": {"type": "integer", "example": 123, "description": (
                f"The number of rows, exact up to {COUNT_CAP:,}; above that, {COUNT_CAP:,} and "
                "`count_is_lower_bound` is true.")},
            "count_is_lower_bound": {"type": "boolean", "description": (
                f"True when the list holds more than {COUNT_CAP:,} rows and `count` only says so: follow "
                "`next` (`page=last` is refused).")},
            **{k: v for k, v in answer["properties"].items() if k != "count"}}
        answer["required"] = ["count", "count_is_lower_bound", "results"]
        return answer


ErrorSerializer = inline_serializer(name="Error", fields={
    "code": serializers.CharField(),
    "message": serializers.CharField(),
    "field_errors": serializers.DictField(child=serializers.ListField(child=serializers.CharField())),
})

ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid input or a protocol rule refused it."),
    401: OpenApiResponse(ErrorSerializer, description="Not authenticated."),
    403: OpenApiResponse(ErrorSerializer, description="The role does not allow this."),
    404: OpenApiResponse(ErrorSerializer, description="No such record in your scope."),
    409: OpenApiResponse(ErrorSerializer, description="The record's state forbids this."),
    415: OpenApiResponse(ErrorSerializer, description="The body is not JSON (`unsupported_media_type`)."),
}
READ_ERRORS = {code: ERRORS[code] for code in (401, 404)}


class UnknownParameters(RuleViolation):
    """Query parameters a list does not know: refused by name rather than silently ignored."""

    def __init__(self, names: list[str]) -> None:
        super().__init__("unknown_parameter", f"Unknown query parameter(s): {', '.join(names)}.", field=names[0])
        self.field_errors = {name: ["Unknown query parameter."] for name in names}


class CodeOrIdFilter(filters.CharFilter):
    """A related record by its code, or by its id when the value is all digits (a code of digits matches
    too). An unknown code and one outside the caller's scope both give an empty list, never an error."""

    def __init__(self, *args: Any, code_field: str = "code", **kwargs: Any) -> None:
        self.code_field = code_field
        super().__init__(*args, **kwargs)

    def filter(self, qs: QuerySet, value: str) -> QuerySet:
        if value in (None, ""):
            return qs
        match = Q(**{f"{self.field_name}__{self.code_field}": value})
        if value.isascii() and value.isdigit() and len(value) < 19:  # fits a bigint
            match |= Q(**{f"{self.field_name}_id": int(value)})
        return qs.filter(match)


class StrictFilterBackend(filters.DjangoFilterBackend):
    """django-filter, plus: a list refuses query parameters it does not know (400 ``unknown_parameter``).

    A list knows its filterset's filters, pagination (``page``, ``page_size``) and ``format``; a list
    that reads its parameters itself calls ``refuse_unknown_params``. Detail reads and actions are
    not checked: they take no filters.
    """

    ALWAYS = frozenset({"page", "page_size", "format"})

    def filter_queryset(self, request: Request, queryset: QuerySet, view: Any) -> QuerySet:
        if is_list_request(request, view):
            filterset_class = self.get_filterset_class(view, queryset)
            refuse_unknown_params(request, filterset_class.base_filters if filterset_class else ())
        return super().filter_queryset(request, queryset, view)


def refuse_unknown_params(request: Request, known: Any) -> None:
    """Raise ``unknown_parameter`` for a query parameter outside ``known`` and pagination/format."""
    if unknown := sorted(set(request.query_params) - set(known) - StrictFilterBackend.ALWAYS):
        raise UnknownParameters(unknown)


def is_list_request(request: Request, view: Any) -> bool:
    if request.method not in ("GET", "HEAD"):
        return False
    action = getattr(view, "action", None)
    if action is not None:
        return action == "list"
    return (getattr(view, "lookup_url_kwarg", None) or getattr(view, "lookup_field", "pk")) not in view.kwargs
