"""The audit trail's filter form (admin page and CSV export share it)."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib.admin.widgets import AdminDateWidget
from django.utils.text import capfirst

from audit.selectors import (
    AuditFilters,
    AuditScope,
    auditable_sites,
    auditable_tables,
    auditable_users,
    get_audit_subject,
)
from trials.models import Site


class UserChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        name = obj.get_full_name()
        return f"{obj.get_username()} ({name})" if name else obj.get_username()


class AuditFilterForm(forms.Form):
    date_from = forms.DateField(required=False, label="From", widget=AdminDateWidget,
                                help_text="UTC date, inclusive.")
    date_to = forms.DateField(required=False, label="To", widget=AdminDateWidget, help_text="UTC date, inclusive.")
    site: forms.ModelChoiceField[Site] = forms.ModelChoiceField(queryset=None, required=False, empty_label="All sites")
    user = UserChoiceField(queryset=None, required=False, empty_label="All users")
    table = forms.ChoiceField(required=False)
    # Set by the subject history's "Download CSV": the subject and every record placed under it.
    subject = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def __init__(self, *args: Any, scope: AuditScope, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scope = scope
        # Only what the scope reads is offered: a monitor never sees another site or its staff listed.
        cast(forms.ModelChoiceField, self.fields["site"]).queryset = auditable_sites(scope)
        cast(UserChoiceField, self.fields["user"]).queryset = auditable_users(scope)
        tables = sorted(auditable_tables(scope), key=lambda t: t.name)
        cast(forms.ChoiceField, self.fields["table"]).choices = [
            ("", "All tables"), *((t.label, f"{capfirst(t.name)} ({t.label})") for t in tables)]

    def clean_subject(self) -> Any:
        pk = self.cleaned_data.get("subject")
        if pk is None:
            return None
        subject = get_audit_subject(scope=self.scope, pk=pk)
        if subject is None:
            raise forms.ValidationError("No such subject in your scope.")
        return subject

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", "The end date is before the start date.")
        return data

    def audit_filters(self) -> AuditFilters:
        data = self.cleaned_data
        return AuditFilters(date_from=data.get("date_from"), date_to=data.get("date_to"),
                            site_id=data["site"].pk if data.get("site") else None,
                            user_id=data["user"].pk if data.get("user") else None, table=data.get("table") or None,
                            subject_id=data["subject"].pk if data.get("subject") else None)

    def described(self) -> dict[str, Any]:
        """The filters as recorded with an export (JSON)."""
        data = self.cleaned_data
        return {
            "date_from": data["date_from"].isoformat() if data.get("date_from") else None,
            "date_to": data["date_to"].isoformat() if data.get("date_to") else None,
            "site": data["site"].code if data.get("site") else None,
            "user": data["user"].get_username() if data.get("user") else None,
            "table": data.get("table") or None,
            "subject": data["subject"].code if data.get("subject") else None,
        }
