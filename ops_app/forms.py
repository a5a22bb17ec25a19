"""The dashboard's forms: what an operator may type, checked before any action runs.
The bounds an action enforces itself (a forced level's hours) stay in the action."""

from __future__ import annotations

from django import forms

from ops_app import degradation
from ops_app.models import OpsState


def _max_length(field: str) -> int:
    return OpsState._meta.get_field(field).max_length


class _Form(forms.Form):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, label_suffix="", **kwargs)


class MaintenanceForm(_Form):
    message = forms.CharField(
        label="Message for users",
        max_length=_max_length("maintenance_message"),
        help_text="Shown on the maintenance page.",
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    eta = forms.CharField(
        label="Expected back (optional)",
        max_length=_max_length("maintenance_eta"),
        required=False,
        help_text="A time (14:30 UTC: users read “back at 14:30 UTC”) or free text "
        "(in 10 minutes: users read “Expected back: in 10 minutes”).",
    )
    end_live = forms.BooleanField(
        label="End live sessions now",
        required=False,
        help_text="Otherwise live conversations go on until they finish.",
    )


class ForcedLevelForm(_Form):
    level = forms.TypedChoiceField(
        label="Level",
        coerce=int,
        choices=[
            (level, f"{level} {degradation.LEVEL_NAMES[level]}")
            for level in (degradation.REDUCED, degradation.VOICE_ONLY, degradation.FULL)
        ],
    )
    reason = forms.CharField(
        label="Reason",
        max_length=_max_length("forced_reason"),
        help_text="Recorded in the audit log.",
    )
    hours = forms.FloatField(label="Hours", initial=1)


# The longest reason for ending a call (ops_app.actions.end_call checks it too).
END_REASON_MAX = 300


class EndCallForm(_Form):
    def __init__(self, *args, **kwargs) -> None:
        # Its own ids: the dashboard's level form has a reason field too.
        super().__init__(*args, auto_id="end-%s", **kwargs)

    reason = forms.CharField(
        label="Why end this call",
        max_length=END_REASON_MAX,
        help_text="Recorded in the audit log. The caller hears a short goodbye first.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
