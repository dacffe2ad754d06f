"""Exports in the admin: the job list and page (scoped, progress, refresh, download), the retry action, and
the export actions on the trial list and the subject list."""

from __future__ import annotations

import pytest
from django.urls import reverse

from exports.models import ExportJob, State
from exports.services import create_export_job, run_export_job

pytestmark = pytest.mark.django_db
LIST = "admin:exports_exportjob_changelist"


def test_the_job_list_shows_state_progress_scope_and_download(world, subjects, login):
    done = run_export_job(create_export_job(by=world.data_manager, trial=world.trial, format_code="probe").pk)
    queued = create_export_job(by=world.monitor, trial=world.trial, format_code="probe")
    html = login(world.data_manager).get(reverse(LIST)).content.decode()
    assert reverse("admin:exports_exportjob_download", args=[done.pk]) in html
    assert "SA, SB" in html and "2/2" in html and "Queued" in html and "Done" in html
    monitor_html = login(world.monitor).get(reverse(LIST)).content.decode()
    assert reverse("admin:exports_exportjob_change", args=[queued.pk]) in monitor_html
    assert reverse("admin:exports_exportjob_change", args=[done.pk]) not in monitor_html


def test_the_job_page_refreshes_while_it_runs_and_offers_the_download_when_done(world, subjects, login):
    client = login(world.data_manager)
    job = create_export_job(by=world.data_manager, trial=world.trial, format_code="probe")
    page = client.get(reverse("admin:exports_exportjob_change", args=[job.pk])).content.decode()
    assert 'http-equiv="refresh"' in page
    run_export_job(job.pk)
    page = client.get(reverse("admin:exports_exportjob_change", args=[job.pk])).content.decode()
    assert 'http-equiv="refresh"' not in page and "Download the package" in page
    download = client.get(reverse("admin:exports_exportjob_download", args=[job.pk]))
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"


def test_another_users_job_is_not_found(world, subjects, login):
    job = create_export_job(by=world.data_manager, trial=world.trial, format_code="probe")
    client = login(world.monitor)
    assert client.get(reverse("admin:exports_exportjob_change", args=[job.pk])).status_code == 404
    assert client.get(reverse("admin:exports_exportjob_download", args=[job.pk])).status_code == 404


def test_the_retry_action_queues_failed_jobs_and_refuses_others(world, subjects, login):
    failed = create_export_job(by=world.data_manager, trial=world.trial, format_code="probe")
    queued = create_export_job(by=world.data_manager, trial=world.trial, format_code="probe")
    ExportJob.objects.filter(pk=failed.pk).update(state=State.FAILED, error="boom", attempts=1)
    response = login(world.data_manager).post(reverse(LIST), {"action": "retry",
                                                              "_selected_action": [failed.pk, queued.pk]}, follow=True)
    failed.refresh_from_db()
    assert failed.state == State.QUEUED
    text = response.content.decode()
    assert "1 export(s) queued again." in text and "only a failed or stalled export can be retried" in text


def test_the_trial_action_asks_for_format_and_sites_then_queues_the_export(world, subjects, login):
    client = login(world.data_manager)
    url = reverse("admin:trials_trial_changelist")
    page = client.post(url, {"action": "export_trials", "_selected_action": [world.trial.pk]})
    assert page.status_code == 200 and 'value="probe"' in page.content.decode()
    response = client.post(url, {"action": "export_trials", "_selected_action": [world.trial.pk], "apply": "1",
                                 "format": "probe", "sites": ["SB"]})
    assert response.status_code == 302 and response["Location"] == reverse(LIST)
    job = ExportJob.objects.get()
    assert (job.format, job.sites, job.requested_by, job.state) == ("probe", ["SB"], world.data_manager, "queued")


def test_the_trial_action_shows_a_refusal_on_the_form(world, subjects, login):
    client = login(world.coordinator)
    response = client.post(reverse("admin:trials_trial_changelist"), {
        "action": "export_trials", "_selected_action": [world.trial.pk], "apply": "1", "format": "probe"})
    assert response.status_code == 200
    assert "does not allow the probe export" in response.content.decode()
    assert not ExportJob.objects.exists()


def test_the_subject_action_exports_the_selected_subjects(world, subjects, login):
    client = login(world.coordinator)
    chosen = [subjects["a1"].pk, subjects["a2"].pk]
    response = client.post(reverse("admin:patients_subject_changelist"), {
        "action": "export_subjects", "_selected_action": chosen, "apply": "1", "format": "casebook"})
    assert response.status_code == 302, response.content.decode()[-2000:]
    job = ExportJob.objects.get()
    assert (job.format, job.sites, job.subjects) == ("casebook", ["SA"], sorted([subjects["a1"].code,
                                                                                 subjects["a2"].code]))
