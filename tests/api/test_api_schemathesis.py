"""Every operation of the v1 schema, fuzzed from the schema itself (schemathesis): as a coordinator's session
(with CSRF enforced, as a browser client meets it) and as a laboratory's token, against the demo trial.

Bounded and deterministic (a fixed number of examples per operation, derandomized): a few hundred requests
in all. Every answer must be a documented status code with a documented content type and a body that
conforms to its schema, and none may be a 5xx. A failure names the operation and the request to replay.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client
from django.test.client import ClientHandler
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from patients.models import Subject
from trials.management.commands.load_demo import TRIAL_CODE
from trials.models import Site, Trial
from trials.services import issue_service_account

pytestmark = pytest.mark.django_db

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
# Examples per operation (each sent by both callers): schema-conforming input, input that breaks the schema,
# and conforming input aimed at a real record of the callers' site (path parameters filled in).
EXAMPLES = {GenerationMode.POSITIVE: 2, GenerationMode.NEGATIVE: 2}
EXAMPLES_ON_A_RECORD = 2
Credentials = dict[str, dict[str, str]]  # cookies and headers


def wsgi_app(*, enforce_csrf_checks: bool) -> Callable[..., Iterable[bytes]]:
    """Django's test handler as a WSGI application: the same process, connection and test transaction."""
    handler = ClientHandler(enforce_csrf_checks=enforce_csrf_checks)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        response = handler(environ)
        headers = list(response.items()) + [("Set-Cookie", c.output(header="")) for c in response.cookies.values()]
        start_response(f"{response.status_code} {response.reason_phrase}", headers)
        return [b"".join(response) if response.streaming else response.content]

    return app


@pytest.fixture(scope="module")
def api_schema() -> Any:
    raw = SchemaGenerator(api_version="v1").get_schema(request=None, public=True)
    return schemathesis.openapi.from_dict(raw)


@pytest.fixture
def demo() -> Trial:
    call_command("load_demo", stdout=io.StringIO())
    return Trial.objects.get(code=TRIAL_CODE)


def session_credentials(username: str) -> Credentials:
    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    csrf = _get_new_csrf_string()
    return {"cookies": {"sessionid": client.cookies["sessionid"].value, "csrftoken": csrf},
            "headers": {"X-CSRFToken": csrf}}


def token_credentials(trial: Trial) -> Credentials:
    _account, token = issue_service_account(trial=trial, sites=[Site.objects.get(code="BJ01")], name="BJ01 LIS",
                                            by=get_user_model().objects.get(username="dm"))
    return {"cookies": {}, "headers": {"Authorization": f"Token {token}"}}


def real_path_parameters(trial: Trial) -> dict[str, str]:
    """Values for the schema's path parameters: the trial, a subject of the callers' site and its screening
    number (its id serves every ``{id}``: the subject's own routes, and whichever record has that id)."""
    subject = Subject.objects.filter(site__code="BJ01", trial=trial).order_by("pk").first()
    assert subject is not None
    return {"id": str(subject.pk), "code": trial.code, "site_code": "BJ01",
            "number": subject.screening_number or "1"}


def run_operation(operation: Any, *, app: Any, callers: dict[str, Credentials], path_parameters: dict[str, str],
                  answers: list[tuple[str, int, str]]) -> list[str]:
    """Each generated case is sent once by every caller (generation costs more than the requests)."""
    failures: list[str] = []
    names = {p.name for p in operation.path_parameters}
    # Only a free text in the path: no input breaks the schema (hypothesis would search in vain for one).
    negatable = bool(len(operation.query) or len(operation.body))
    strategies = [(mode, operation.as_strategy(mode), n) for mode, n in EXAMPLES.items()
                  if mode is GenerationMode.POSITIVE or negatable]
    if names:
        fixed = {name: path_parameters[name] for name in names if name in path_parameters}
        strategies.append((GenerationMode.POSITIVE,
                           operation.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed), EXAMPLES_ON_A_RECORD))
    for mode, strategy, examples in strategies:
        @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def check(case: Any) -> None:
            for caller, credentials in callers.items():
                try:
                    response = case.call_and_validate(app=app, checks=CHECKS, headers=dict(credentials["headers"]),
                                                      cookies=dict(credentials["cookies"]))
                    answers.append((caller, response.status_code, response.text[:300]))
                except (AssertionError, BaseExceptionGroup) as err:  # every case runs; all failures are listed
                    failures.append(f"{operation.label} as {caller}: {err}")

        try:
            check()
        except Unsatisfiable:  # nothing in the operation can be made to break its schema (e.g. a free path text)
            if mode is not GenerationMode.NEGATIVE:
                raise
    return failures


def test_every_operation_as_a_coordinator_session_and_a_laboratory_token(api_schema, demo):
    app = wsgi_app(enforce_csrf_checks=True)
    callers = {"coordinator session": session_credentials("coord.bj"), "laboratory token": token_credentials(demo)}
    path_parameters = real_path_parameters(demo)
    failures: list[str] = []
    answers: list[tuple[str, int, str]] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    for operation in operations:
        failures += run_operation(operation, app=app, callers=callers, path_parameters=path_parameters,
                                  answers=answers)
    assert len(operations) >= 90
    assert not failures, "\n\n".join(failures)
    for caller in callers:  # the credentials held throughout, and reached the views
        statuses = [status for who, status, _text in answers if who == caller]
        assert len(statuses) > 200 and 401 not in statuses, caller
        assert sum(200 <= status < 300 for status in statuses) > 40, caller
    assert not [text for _who, _status, text in answers if "CSRF" in text]
