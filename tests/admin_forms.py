"""Admin form helpers for tests: post back what a change page rendered, as a browser would."""

from __future__ import annotations

from typing import Any

from django import forms


def form_values(form: forms.BaseForm) -> dict[str, Any]:
    """The values a browser submits for ``form`` as rendered (unbound: its initial values)."""
    data: dict[str, Any] = {}
    for bound in form:
        value = bound.field.prepare_value(bound.value())
        if isinstance(bound.field.widget, forms.CheckboxInput):
            if value:
                data[bound.html_name] = "on"
            continue
        if value is None:
            continue
        data[bound.html_name] = value
        if bound.field.show_hidden_initial:
            data[bound.html_initial_name] = value
    return data


def change_form_data(response: Any, **changes: Any) -> dict[str, Any]:
    """The POST of an admin change page left as it is (main form, inline management forms and rows),
    with ``changes`` applied."""
    data = form_values(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        data.update(form_values(formset.management_form))
        for form in formset.forms:
            data.update(form_values(form))
    data.update(changes)
    return data
