"""Whatever staff add, change or delete in the admin leaves an audit event: who, what,
from where, and the admin's own description of the change (never a password)."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.utils import timezone

from ops_app.models import AuditEvent
from sessions_app.models import ApiKey
from tests.factories import ApiKeyFactory
from voiceplatform.admin import AuditedMixin

pytestmark = pytest.mark.django_db

Action = AuditEvent.Action
KEYS = "/admin/sessions_app/apikey/"


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def test_every_admin_page_of_the_project_records_its_changes():
    unaudited = [
        model._meta.label
        for model, model_admin in admin.site._registry.items()
        if not isinstance(model_admin, AuditedMixin)
    ]

    assert unaudited == []
    assert {User, Group} <= set(admin.site._registry)


def test_adding_a_key_in_the_admin_records_who_added_what_from_where(admin_client, admin_user):
    admin_client.post(f"{KEYS}add/", {"name": "kiosk"}, REMOTE_ADDR="192.0.2.7")

    key = ApiKey.objects.get(name="kiosk")
    [event] = events(Action.ADMIN_ADD)
    assert event.actor == admin_user and event.actor_name == "admin"
    assert event.target == f"sessions_app.apikey:{key.pk} {key}"
    assert event.ip == "192.0.2.7"
    assert event.request_id  # the request's id, as in its log lines
    assert event.details == {"message": "Added.", "change": [{"added": {}}]}


def test_changing_a_key_records_which_fields_changed(admin_client):
    key = ApiKeyFactory(name="kiosk")

    response = admin_client.post(
        f"{KEYS}{key.pk}/change/",
        {"name": "lobby kiosk", "user": "", "revoked_at_0": "", "revoked_at_1": ""},
    )

    assert response.status_code == 302
    [event] = events(Action.ADMIN_CHANGE)
    assert event.target.startswith(f"sessions_app.apikey:{key.pk} lobby kiosk")
    assert event.details["change"] == [{"changed": {"fields": ["Name"]}}]
    assert event.details["message"] == "Changed Name."


def test_deleting_a_key_records_it_before_it_is_gone(admin_client):
    key = ApiKeyFactory(name="old kiosk")
    target = f"sessions_app.apikey:{key.pk} {key}"

    admin_client.post(f"{KEYS}{key.pk}/delete/", {"post": "yes"})

    assert not ApiKey.objects.filter(pk=key.pk).exists()
    assert [e.target for e in events(Action.ADMIN_DELETE)] == [target]


def test_deleting_keys_in_bulk_records_one_event_per_key(admin_client):
    keys = [ApiKeyFactory(name=f"bulk {n}") for n in range(3)]

    admin_client.post(
        KEYS,
        {"action": "delete_selected", "_selected_action": [k.pk for k in keys], "post": "yes"},
    )

    assert ApiKey.objects.count() == 0
    assert sorted(e.target.split(" ")[0] for e in events(Action.ADMIN_DELETE)) == sorted(
        f"sessions_app.apikey:{k.pk}" for k in keys
    )


def test_revoking_keys_in_bulk_records_one_event_per_key_it_revoked(admin_client):
    first, second = ApiKeyFactory(name="first"), ApiKeyFactory(name="second")
    already = ApiKeyFactory(name="already", revoked_at=timezone.now())

    response = admin_client.post(
        KEYS,
        {"action": "revoke", "_selected_action": [first.pk, second.pk, already.pk]},
        follow=True,
    )

    assert "Revoked 2 key(s)." in [str(m) for m in response.context["messages"]]
    assert ApiKey.objects.active().count() == 0
    revoked = events(Action.ADMIN_CHANGE)
    assert sorted(e.target.split(" ")[0] for e in revoked) == sorted(
        f"sessions_app.apikey:{k.pk}" for k in (first, second)
    )
    assert {e.details["message"] for e in revoked} == {"Revoked with the bulk action."}


def test_changing_a_users_password_is_recorded_without_the_password(admin_client, admin_user):
    user = User.objects.create_user("support", password="old-password-1")

    admin_client.post(
        f"/admin/auth/user/{user.pk}/password/",
        {
            "password1": "A-new-secret-93x",
            "password2": "A-new-secret-93x",
            "usable_password": "true",
        },
    )

    user.refresh_from_db()
    assert user.check_password("A-new-secret-93x")
    [event] = events(Action.ADMIN_CHANGE)
    assert event.target == f"auth.user:{user.pk} support" and event.actor == admin_user
    assert "A-new-secret-93x" not in str(event.details)


def test_adding_a_group_is_recorded(admin_client):
    admin_client.post("/admin/auth/group/add/", {"name": "support staff"})

    group = Group.objects.get(name="support staff")
    assert [e.target for e in events(Action.ADMIN_ADD)] == [f"auth.group:{group.pk} support staff"]
