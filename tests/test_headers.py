"""Security headers: a Content-Security-Policy on every page, a Permissions-Policy on every response,
no caching of API responses (they carry subject data), and no server software named by gunicorn."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from config.gunicorn_conf import SERVER_HEADER
from tests.factories import PASSWORD, screened

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db


def directives(response: Any) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    parsed = [part.strip().split() for part in policy.split(";") if part.strip()]
    return {name: values for name, *values in parsed}


def api(user: Any) -> APIClient:
    client = APIClient()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def test_every_page_has_a_content_security_policy(world, login, client):
    pages = [client.get("/admin/login/"), login(world.data_manager).get("/admin/"),
             login(world.coordinator).get("/admin/patients/subject/"), client.get("/api/docs/"),
             api(world.coordinator).get("/api/v1/subjects/", HTTP_ACCEPT="text/html")]
    for response in pages:
        assert response.status_code == 200, response.request["PATH_INFO"]
        policy = directives(response)
        assert policy["default-src"] == ["'self'"] and policy["script-src"] == ["'self'"]
        assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
        assert not any("http" in value for values in policy.values() for value in values)  # no CDN anywhere


def test_api_docs_are_served_from_this_origin_without_inline_scripts(client):
    html = client.get("/api/docs/").content.decode()
    assert "cdn.jsdelivr.net" not in html and "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "<script>" not in html  # the initialising script is a separate, same-origin file
    script = client.get("/api/docs/", {"script": ""})
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()


def test_every_response_has_a_permissions_policy(world, login, client):
    for response in (client.get("/admin/login/"), client.get("/api/v1/subjects/"), client.get("/nowhere/"),
                     client.get("/api/schema/")):
        policy = response["Permissions-Policy"]
        for feature in ("camera=()", "microphone=()", "geolocation=()", "payment=()"):
            assert feature in policy


def test_api_responses_are_never_stored(world):
    screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    client = api(world.coordinator)
    for response in (client.get("/api/v1/subjects/"), client.get("/api/v1/subjects/NOPE-0001/"),
                     APIClient().get("/api/v1/subjects/"), client.post("/api/v1/subjects/", {}, format="json")):
        assert "no-store" in response["Cache-Control"], response.status_code
    assert "no-store" not in APIClient().get("/api/schema/").get("Cache-Control", "")  # no subject data in it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return urllib.request.urlopen(url, timeout=5)
        except urllib.error.HTTPError as err:
            return err  # an answer, e.g. 401 for an anonymous API call
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_gunicorn_does_not_name_the_server_software():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(DJANGO_SECRET_KEY="s" * 50, DJANGO_ALLOWED_HOSTS="127.0.0.1", DJANGO_SECURE_SSL_REDIRECT="0",
               PORT=str(port), WEB_CONCURRENCY="1")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:config.gunicorn_conf", "config.wsgi"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        response = fetch(f"http://127.0.0.1:{port}/api/v1/subjects/")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert response.status in (401, 403)
    assert response.headers.get_all("Server") == [SERVER_HEADER]
    assert "no-store" in response.headers["Cache-Control"] and "camera=()" in response.headers["Permissions-Policy"]
