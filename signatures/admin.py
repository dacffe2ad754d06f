"""Signatures in the admin: the scoped, read-only list with a visible valid/invalid status, the signing
page (investigators only, password re-entry), a read-only list on the subject's page, and refused attempts.
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from config.api import acting_user
from config.errors import DomainError
from patients.admin import SubjectAdmin
from patients.models import Subject
from signatures import services
from signatures.content import model_of
from signatures.models import FailedSigningAttempt, Meaning, Signature
from signatures.selectors import list_forms, signable_subjects, subject_signatures_of, verify_signature
from trials.access import access_of
from trials.admin_scoping import ReadOnlyClinicalAdmin, add_domain_error, site_time_column
from trials.models import Membership

# --- shown wherever a signature is listed (§11.50: name, time and meaning with every signature) ------


def status_html(signature: Signature) -> str:
    if signature.is_valid:
        return mark_safe('<strong class="signature-status signature-valid" style="color:#1e7e34">Valid</strong>')
    return format_html(
        '<strong class="signature-status signature-invalid" style="color:#ba2121" title="{}">Invalid — changed '
        'since signed {} UTC</strong><br><span class="signature-reason">{}</span>',
        signature.invalidated_reason, f"{signature.invalidated_at:%Y-%m-%d %H:%M}", signature.invalidated_reason)


def scope_text(signature: Signature) -> str:
    if signature.record_type is None:
        return "Casebook"
    return f"{signature.record_type.name.capitalize()} #{signature.record_id}"


class SignatureColumns:
    """The list's columns (no query per row; the subject page shows the same texts)."""

    @admin.display(description="Signed")
    def scope_display(self, obj: Signature) -> str:
        return scope_text(obj)

    @admin.display(description="Status")
    def status_display(self, obj: Signature) -> str:
        return status_html(obj)


def _investigates_anywhere(request: HttpRequest) -> bool:
    return any(Membership.Role.INVESTIGATOR in roles for roles in access_of(request.user).site_roles.values())


# --- the subject page: its signatures --------------------------------------------------------------


def subject_signatures(request: HttpRequest, subject: Subject) -> dict[str, Any]:
    """The subject page's list of its signatures (newest first, each with its status), and for an
    investigator of the subject's site the link to sign (two queries: the signatures, the user's roles are
    already read)."""
    rows = [(s, scope_text(s), status_html(s), reverse("admin:signatures_signature_change", args=[s.pk]))
            for s in subject_signatures_of(subject)]
    may_sign = access_of(request.user).has_role(trial_id=subject.trial_id, site_id=subject.site_id,
                                                role=Membership.Role.INVESTIGATOR)
    return {"signatures": rows,
            "sign_url": f"{reverse('admin:signatures_signature_add')}?subject={subject.pk}" if may_sign else ""}


# patients.admin is imported first (INSTALLED_APPS order) and must not import this app: append here.
SubjectAdmin.page_sections = [*SubjectAdmin.page_sections, subject_signatures]


# --- the signing page ------------------------------------------------------------------------------


class SignForm(forms.Form):
    subject = forms.ModelChoiceField(queryset=Subject.objects.none(),
                                     help_text="Subjects at the sites where you are an investigator.")
    record = forms.ChoiceField(label="Form", required=False,
                               help_text="Leave empty to sign the subject's whole casebook.")
    meaning = forms.ChoiceField(choices=Meaning.choices, widget=forms.RadioSelect,
                                help_text="What you declare by signing.")
    password = forms.CharField(widget=forms.PasswordInput, strip=False,
                               help_text="Re-enter your password: it is your signature (21 CFR 11.200).")

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["subject"]).queryset = signable_subjects(user)
        self.chosen_subject = self._chosen_subject()
        forms_ = list_forms(self.chosen_subject) if self.chosen_subject else []
        cast(forms.ChoiceField, self.fields["record"]).choices = [("", "— the whole casebook —"),
                                                                   *((f.key, f.title) for f in forms_)]

    def _chosen_subject(self) -> Subject | None:
        value = self.data.get("subject") if self.is_bound else self.initial.get("subject")
        text = str(value or "")
        if not (text.isascii() and text.isdigit()) or len(text) > 18:  # "²" passes isdigit(); int() refuses it
            return None
        subjects = cast(forms.ModelChoiceField, self.fields["subject"]).queryset
        assert subjects is not None  # set by __init__
        return subjects.filter(pk=int(text)).first()

    def chosen_record(self) -> Any:
        key = self.cleaned_data.get("record") or ""
        if not key:
            return None
        label, _sep, pk = key.partition(":")
        return model_of(label)._default_manager.get(pk=int(pk))


class ValidityFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "valid"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Valid"), ("no", "Invalid (changed since signed)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in ("yes", "no"):
            return queryset.filter(invalidated_at__isnull=self.value() == "yes")
        return queryset


@admin.register(Signature)
class SignatureAdmin(SignatureColumns, ReadOnlyClinicalAdmin):
    list_display = ["subject", "scope_display", "meaning", "signer_name", "signed_at_site_time", "status_display"]
    list_select_related = ["subject__site", "record_type"]
    signed_at_site_time = site_time_column("signed_at", "signed at")
    list_filter = [ValidityFilter, "meaning", "scope", ("subject__site", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["subject__code", "signer_name"]
    ordering = ["-signed_at", "-pk"]
    fields = ("subject", "scope_display", "meaning", "signer_name", "signer", "signed_at", "status_display",
              "invalidated_at", "invalidated_reason", "content_hash", "content_check")
    readonly_fields = fields

    @admin.display(description="Content now")
    def content_check(self, obj: Signature) -> str:
        result = verify_signature(obj)
        if result.matches:
            return "Matches the signed content."
        return f"Differs from the signed content (now {result.current_hash})."

    def has_add_permission(self, request: HttpRequest) -> bool:
        return _investigates_anywhere(request)  # "add" is signing

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
                 ) -> HttpResponse:
        """Sign a casebook or a form: choose the subject first (its forms are then listed), then sign."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        initial = {"subject": request.GET.get("subject", "")}
        form = SignForm(request.POST if request.method == "POST" else None, user=request.user, initial=initial)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                signature = services.sign(subject=data["subject"], meaning=data["meaning"], password=data["password"],
                                          by=acting_user(request), record=form.chosen_record())
            except DomainError as err:
                add_domain_error(form, err)
            else:
                messages.success(request, f"Signed: {scope_text(signature).lower()} of {signature.subject.code} "
                                          f"({signature.get_meaning_display().lower()}).")
                return HttpResponseRedirect(reverse("admin:patients_subject_change", args=[signature.subject_id]))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "form": form,
                   "subject": form.chosen_subject, "title": "Sign case report forms", **(extra_context or {})}
        return TemplateResponse(request, "admin/signatures/signature/sign.html", context)


@admin.register(FailedSigningAttempt)
class FailedSigningAttemptAdmin(ReadOnlyClinicalAdmin):
    """Refused signings (wrong password, not an investigator), for the trial's data managers (§11.300(d))."""

    list_display = ["attempted_at_site_time", "user", "subject", "code", "meaning"]
    list_select_related = ["user", "subject__site"]
    attempted_at_site_time = site_time_column("attempted_at", "attempted at")
    list_filter = ["code"]
    search_fields = ["subject__code", "user__username"]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return access_of(request.user).designs()

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        access = access_of(request.user)
        return access.designs() if obj is None else access.designs(obj.subject.trial_id)
