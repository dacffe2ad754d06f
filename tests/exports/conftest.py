"""Export fixtures: a test-only format registered for the tests (and removed after), export storage in a
temporary directory, and a few subjects at both sites."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from procrastinate.contrib.django import app

from exports.formats import REGISTRY, register
from exports.models import ExportJob
from exports.storage import export_storage
from tests.exports.probe import ProbeFormat, register_probes, unregister_probes
from tests.factories import screened


@pytest.fixture(autouse=True)
def probe_format() -> Iterator[None]:
    """The probe formats; and a stand-in "casebook" when the real one is not installed (role rules only)."""
    added_casebook = "casebook" not in REGISTRY
    register_probes()
    if added_casebook:
        register(ProbeFormat(code="casebook", label="Casebook stand-in (tests)"))
    yield
    unregister_probes()
    if added_casebook:
        REGISTRY.pop("casebook", None)


@pytest.fixture(autouse=True)
def export_dir(settings: Any, tmp_path: Path) -> Path:
    location = tmp_path / "exports"
    settings.STORAGES = {**settings.STORAGES, "exports": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(location)}}}
    return location


@pytest.fixture
def subjects(world: Any) -> dict[str, Any]:
    """Two subjects at site A and one at site B."""
    a1 = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    a2 = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    b1 = screened(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b)
    return {"a1": a1, "a2": a2, "b1": b1}


def package(job: ExportJob) -> zipfile.ZipFile:
    return zipfile.ZipFile(export_storage().open(job.file_name, "rb"))


def stored_files(root: Path) -> list[str]:
    """Every file under the export storage, relative to it."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def run_queued_jobs() -> None:
    """Run every queued export task with a real procrastinate worker (on its own connection, as
    ``manage.py procrastinate worker`` does), until the queue is empty. Needs committed data."""
    with app.replace_connector(app.connector.get_worker_connector()):  # type: ignore[attr-defined]
        app.run_worker(queues=["exports"], wait=False, install_signal_handlers=False, listen_notify=False)
