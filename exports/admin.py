"""Exports in the admin: the list of export jobs (state, progress, scope, who, when, download), a page per
job that refreshes while it runs, a retry action for failed jobs, and "Export case report forms..."
actions on the trial list and on the subject list (selected subjects). Scoped like every admin page."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils.html import format_html

from config.errors import DomainError
from exports.formats import REGISTRY
from exports.models import ExportJob, State
from exports.selectors import list_export_jobs
from exports.services import CASEBOOK, create_export_job, is_stalled, retry_export_job
from exports.storage import export_storage
from patients.models import Subject
from trials.access import access_of
from trials.admin_scoping import NotFoundForHiddenMixin, site_time
from trials.models import Site, Trial

REFRESH_SECONDS = 5


@admin.register(ExportJob)
class ExportJobAdmin(NotFoundForHiddenMixin, admin.ModelAdmin):
    list_display = ["id", "trial", "format", "scope", "state", "progress", "requested_by", "created", "finished",
                    "download"]
    list_filter = ["state", "format"]
    list_per_page = 50
    actions = ["retry"]
    readonly_fields = ["trial", "format", "sites", "subjects", "state", "attempts", "files_done", "files_total",
                       "error", "requested_by", "created_at", "started_at", "finished_at", "cutoff", "file_name",
                       "size", "sha256", "manifest"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return list_export_jobs(user=request.user)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return access_of(request.user).reads_any

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access_of(request.user).reads_any

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # exports start from a trial or from selected subjects

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a job is the audit record of its export

    @admin.display(description="scope")
    def scope(self, job: ExportJob) -> str:
        sites = ", ".join(job.sites)
        return f"{sites}; {len(job.subjects)} subject(s)" if job.subjects is not None else sites

    @admin.display(description="progress (files)")
    def progress(self, job: ExportJob) -> str:
        return job.progress

    @admin.display(description="requested", ordering="created_at")
    def created(self, job: ExportJob) -> str:
        return site_time(job.created_at, None)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, job: ExportJob) -> str:
        return site_time(job.finished_at, None)

    @admin.display(description="download")
    def download(self, job: ExportJob) -> str:
        if job.state != State.DONE:
            return "stalled" if is_stalled(job) else "-"
        return format_html('<a href="{}">zip</a>', reverse("admin:exports_exportjob_download", args=[job.pk]))

    @admin.action(description="Retry the selected failed exports")
    def retry(self, request: HttpRequest, queryset: QuerySet) -> None:
        retried = 0
        for job in queryset:
            try:
                retry_export_job(job=job, by=request.user)  # type: ignore[arg-type]
                retried += 1
            except DomainError as err:
                self.message_user(request, err.message, level=messages.WARNING)
        if retried:
            self.message_user(request, f"{retried} export(s) queued again.")

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [path("<path:object_id>/download/", view(self.download_view), name="exports_exportjob_download"),
                *super().get_urls()]

    def download_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        job = self.get_object(request, object_id)  # 404 outside the user's scope
        if job.state != State.DONE:
            self.message_user(request, f"Export #{job.pk} is not done.", level=messages.WARNING)
            return HttpResponseRedirect(reverse("admin:exports_exportjob_change", args=[job.pk]))
        return FileResponse(export_storage().open(job.file_name, "rb"), as_attachment=True,
                            filename=job.file_name.rsplit("/", 1)[-1], content_type="application/zip")

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        job = self.get_object(request, object_id)
        running = job.state in (State.QUEUED, State.RUNNING) and not is_stalled(job)
        done = job.state == State.DONE
        extra = {"refresh_seconds": REFRESH_SECONDS if running else None, "stalled": is_stalled(job),
                 "download_url": reverse("admin:exports_exportjob_download", args=[job.pk]) if done else None}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})


# --- starting exports from the trial list and the subject list ------------------------------------------


class ExportForm(forms.Form):
    format = forms.ChoiceField(help_text="The format of the case report forms.")
    sites = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple,
                                      help_text="Leave empty for every site you may export.")

    def __init__(self, *args: Any, site_codes: list[str] | None = None, initial_format: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["format"].choices = [  # type: ignore[attr-defined]
            (code, fmt.label) for code, fmt in sorted(REGISTRY.items())]
        if initial_format in REGISTRY:
            self.fields["format"].initial = initial_format
        if site_codes is None:
            del self.fields["sites"]
        else:
            self.fields["sites"].choices = [(c, c) for c in site_codes]  # type: ignore[attr-defined]


def _readable_site_codes(request: HttpRequest, trials: QuerySet) -> list[str]:
    access = access_of(request.user)
    sites = Site.objects.filter(trial_sites__trial__in=trials).distinct().order_by("code")
    return [s.code for s in sites if any(access.can_read(trial_id=t.pk, site_id=s.pk) for t in trials)]


def _start(request: HttpRequest, trial: Trial, form: ExportForm, subject_codes: list[str] | None) -> bool:
    sites = form.cleaned_data.get("sites") or None
    try:
        job = create_export_job(by=request.user, trial=trial, format_code=form.cleaned_data["format"],  # type: ignore[arg-type]
                                site_codes=sites, subject_codes=subject_codes)
    except DomainError as err:
        form.add_error("sites" if err.field == "sites" and "sites" in form.fields else None, err.message)
        return False
    url = reverse("admin:exports_exportjob_change", args=[job.pk])
    messages.success(request, format_html('Export <a href="{}">#{}</a> of {} queued.', url, job.pk, trial.code))
    return True


def _action_page(request: HttpRequest, queryset: QuerySet, *, action: str, title: str, intro: str,
                 form: ExportForm) -> HttpResponse:
    return render(request, "admin/exports/export_action.html", {
        "title": title, "intro": intro, "form": form, "action": action, "opts": queryset.model._meta,
        "selected": [str(pk) for pk in queryset.values_list("pk", flat=True)],
    })


@admin.action(description="Export case report forms…")
def export_trials(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
    site_codes = _readable_site_codes(request, queryset)
    form = ExportForm(request.POST if "apply" in request.POST else None, site_codes=site_codes)
    if form.is_bound and form.is_valid() and all(_start(request, trial, form, None) for trial in queryset):
        return HttpResponseRedirect(reverse("admin:exports_exportjob_changelist"))
    return _action_page(request, queryset, action="export_trials", title="Export case report forms", form=form,
                        intro=f"Trials: {', '.join(t.code for t in queryset)}. The export runs in the background; "
                              "its page shows the progress and, when done, the download.")


@admin.action(description="Export casebooks of the selected subjects…")
def export_subjects(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
    subjects = list(queryset.select_related("trial").order_by("trial__code", "code"))
    form = ExportForm(request.POST if "apply" in request.POST else None, initial_format=CASEBOOK)
    if form.is_bound and form.is_valid():
        by_trial: dict[Trial, list[str]] = {}
        for subject in subjects:
            by_trial.setdefault(subject.trial, []).append(subject.code)
        if all(_start(request, trial, form, codes) for trial, codes in by_trial.items()):
            return HttpResponseRedirect(reverse("admin:exports_exportjob_changelist"))
    return _action_page(request, queryset, action="export_subjects", title="Export selected subjects", form=form,
                        intro=f"Subjects: {', '.join(s.code for s in subjects)}.")


def _add_action(model: type[Any], action: Any) -> None:
    """Offer ``action`` on another app's admin list (registered before this module: INSTALLED_APPS order)."""
    model_admin = admin.site.get_model_admin(model)
    model_admin.actions = [*(model_admin.actions or []), action]


_add_action(Trial, export_trials)
_add_action(Subject, export_subjects)
