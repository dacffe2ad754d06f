"""Settings and the demo trial: what `make run` promises on a fresh machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from patients.models import Subject, SubjectStatus, SubjectTransition
from trials.models import Membership, RegistryIdentifier, Trial

ROOT = Path(__file__).resolve().parent.parent


def unconfigured(tmp_path: Path) -> dict[str, str]:
    """No DJANGO_* setting, and a key file that does not exist (this checkout's var/secret_key, which
    `make run` writes, would otherwise supply the key)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return {**clean, "DJANGO_SECRET_KEY_FILE": str(tmp_path / "no_secret_key")}


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


def serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Load the WSGI application as gunicorn does."""
    return subprocess.run([sys.executable, "-c", "import config.wsgi"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_production_mode_requires_secret_key(tmp_path):
    result = run_manage("check", "--deploy", **unconfigured(tmp_path))
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is required" in result.stderr + result.stdout


def test_serving_without_a_secret_key_is_refused(tmp_path):
    result = serve(unconfigured(tmp_path))
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is required" in result.stderr


def test_serving_reads_the_key_file_when_no_key_is_exported(tmp_path):
    key_file = tmp_path / "secret_key"
    key_file.write_text("f" * 20 + "-generated-by-make-run-0123456789-abcdefghijkl\n")
    env = {**unconfigured(tmp_path), "DJANGO_SECRET_KEY_FILE": str(key_file)}
    assert serve(env).returncode == 0, serve(env).stderr
    read = [sys.executable, "-c", "from django.conf import settings; print(settings.SECRET_KEY)"]
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    shown = subprocess.run(read, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert shown.stdout.strip() == key_file.read_text().strip()
    exported = subprocess.run(read, cwd=ROOT, env={**env, "DJANGO_SECRET_KEY": "e" * 50}, capture_output=True,
                              text=True, timeout=120)
    assert exported.stdout.strip() == "e" * 50  # an exported key wins over the file


def test_make_run_serves_like_production_and_make_dev_reloads():
    run = subprocess.run(["make", "--dry-run", "--always-make", "run"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60).stdout
    served = [line for line in run.splitlines() if "gunicorn" in line]
    assert served and "runserver" not in run and "collectstatic --no-input" in run
    assert "DJANGO_DEBUG=0" in served[0] and "DJANGO_DEBUG=1" not in run  # never a traceback in the browser
    assert "DJANGO_ALLOWED_HOSTS=localhost,127.0.0.1" in served[0] and "DJANGO_SECURE_SSL_REDIRECT=0" in served[0]
    assert "var/secret_key" in run and "umask 077" in run
    dev = subprocess.run(["make", "--dry-run", "dev"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "DJANGO_DEBUG=1" in dev and "runserver" in dev


def test_offline_commands_run_in_a_fresh_checkout_without_configuration():
    result = run_manage("makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes detected" in result.stdout


def test_production_mode_passes_deploy_checks():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING",
                        DJANGO_SECRET_KEY="k" * 20 + "-production-secret-0123456789-abcdefghijkl",
                        DJANGO_ALLOWED_HOSTS="trial.example.org")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.django_db
def test_demo_trial_loads_once_and_obeys_the_protocol(capsys):
    call_command("load_demo")
    counts = (Trial.objects.count(), Subject.objects.count(), SubjectTransition.objects.count())
    call_command("load_demo")
    assert (Trial.objects.count(), Subject.objects.count(), SubjectTransition.objects.count()) == counts
    out = capsys.readouterr().out
    assert "already loaded; nothing changed" in out
    assert "coord.bj" in out and "demo-cart-2026" in out

    trial = Trial.objects.get(code="CART19-ALL")
    assert trial.trial_sites.count() == 2 and trial.cohorts.count() == 2 and trial.dose_levels.count() == 2
    people = set(Membership.Role.values) - {Membership.Role.SYSTEM}  # service accounts are issued, not seeded
    assert set(trial.memberships.values_list("role", flat=True)) == people
    statuses = set(Subject.objects.filter(trial=trial).values_list("status", flat=True))
    assert {SubjectStatus.SCREENING, SubjectStatus.ELIGIBLE, SubjectStatus.ENROLLED, SubjectStatus.SCREEN_FAILED,
            SubjectStatus.OFF_STUDY} <= statuses
    # Every demo subject is pseudonymous: codes are generated per site, never names.
    assert all(code.split("-")[0] in ("BJ01", "SH02") for code in Subject.objects.values_list("code", flat=True))


@pytest.mark.django_db
def test_the_demo_trial_claims_no_real_registration():
    """A real install registers published trials (e.g. NCT04351022, ChiCTR1800014761) beside the demo."""
    call_command("load_demo")
    demo = Trial.objects.get(code="CART19-ALL")
    assert list(demo.registry_identifiers.values_list("registry", "identifier")) == [("other", "DEMO-CART19-ALL")]
    real = Trial.objects.create(code="CD19-HUM", title="Humanized CD19 CAR-T in r/r B-ALL", phase=demo.phase,
                                status=demo.status, indication="r/r B-ALL")
    for registry, identifier in (("ctgov", "NCT04351022"), ("chictr", "ChiCTR1800014761")):
        registration = RegistryIdentifier(trial=real, registry=registry, identifier=identifier)
        registration.full_clean()
        registration.save()
    assert real.registry_identifiers.count() == 2
