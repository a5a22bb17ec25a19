"""The audit log in the admin: browsed, filtered, searched and exported as CSV; never
added to, changed or deleted from there."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth.models import Permission, User
from django.test import AsyncClient

from ops_app import audit
from ops_app.models import AuditEvent, OpsState

Action = AuditEvent.Action
LOG = "/admin/ops_app/auditevent/"


def some_events(actor: User) -> dict[str, AuditEvent]:
    return {
        "forced": audit.record(Action.LEVEL_FORCED, actor=actor, target="level 2", ip="192.0.2.10"),
        "failed": audit.record(
            Action.LOGIN_FAILED, actor_name="mallory", target="username mallory", ip="203.0.113.66"
        ),
        "limited": audit.record(
            Action.RATE_LIMITED, target="bucket session:ip:198.51.100.3", details={"limit": 20}
        ),
    }


def listed(page) -> set[int]:
    return {event.pk for event in page.context["cl"].result_list}


@pytest.mark.django_db
def test_the_log_can_be_read_but_not_added_to_changed_or_deleted(admin_client):
    event = audit.record(Action.BREAKER_RESET, actor_name="system", target="breaker tools")
    page = f"{LOG}{event.pk}/change/"

    shown = admin_client.get(page)
    add = admin_client.post(f"{LOG}add/", {"action": "login", "actor_name": "forger"})
    change = admin_client.post(page, {"action": "login", "target": "rewritten"})
    delete = admin_client.post(f"{LOG}{event.pk}/delete/", {"post": "yes"})
    bulk_delete = admin_client.post(
        LOG, {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"}
    )

    assert shown.status_code == 200 and "breaker tools" in shown.content.decode()
    assert 'name="_save"' not in shown.content.decode()
    assert add.status_code == change.status_code == delete.status_code == 403
    assert bulk_delete.status_code == 302  # "no action selected": there is no delete action
    event.refresh_from_db()
    assert event.target == "breaker tools"
    assert not AuditEvent.objects.filter(actor_name="forger").exists()


@pytest.mark.django_db
def test_the_list_shows_when_who_what_target_address_and_request_id(admin_client, admin_user):
    some_events(admin_user)

    page = admin_client.get(LOG)

    html = page.content.decode()
    assert page.status_code == 200
    for text in ("mallory", "level_forced", "level 2", "203.0.113.66", "Export these events"):
        assert text in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"action__exact": "login_failed"}, ["failed"]),
        ({"q": "mallory"}, ["failed"]),
        ({"q": "203.0.113.66"}, ["failed"]),
        ({"q": "session:ip:198.51.100.3"}, ["limited"]),
        ({"actor__isnull": "True", "action__exact": "rate_limited"}, ["limited"]),
    ],
)
def test_the_list_filters_and_searches(admin_client, admin_user, query, expected):
    made = some_events(admin_user)

    page = admin_client.get(LOG, query)

    assert listed(page) == {made[name].pk for name in expected}


@pytest.mark.django_db
def test_the_list_filters_by_actor_and_finds_a_request_id(admin_client, admin_user):
    made = some_events(admin_user)
    tagged = AuditEvent.objects.create(action=Action.LOGIN, request_id="req-7f3a9c")

    by_actor = admin_client.get(LOG, {"actor__id__exact": admin_user.pk})
    by_request = admin_client.get(LOG, {"q": "req-7f3a9c"})

    assert made["forced"].pk in listed(by_actor) and made["failed"].pk not in listed(by_actor)
    assert listed(by_request) == {tagged.pk}


@pytest.mark.django_db
def test_the_actor_filter_lists_accounts_only_to_those_who_may_view_them(client, admin_user):
    auditor = User.objects.create_user("auditor", is_staff=True)
    auditor.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    User.objects.create_user("quiet-account")
    made = some_events(admin_user)
    client.force_login(auditor)

    page = client.get(LOG)
    by_actor = client.get(LOG, {"actor__id__exact": admin_user.pk})

    assert page.status_code == 200 and "quiet-account" not in page.content.decode()
    assert "actor__id__exact" not in page.content.decode()
    assert listed(by_actor) == {made["forced"].pk}  # filtering by address still works


async def read_csv(response) -> list[dict[str, str]]:
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()
    return list(csv.DictReader(io.StringIO(body)))


@pytest.fixture
async def staff_client(admin_user_async):
    client = AsyncClient()
    await client.aforce_login(admin_user_async)
    return client


@pytest.fixture
async def admin_user_async():
    return await User.objects.acreate_superuser("auditor", password="not-used-here-1")


@pytest.mark.django_db(transaction=True)
async def test_the_export_streams_every_event_the_filters_select(staff_client):
    await audit.arecord(Action.LOGIN_FAILED, actor_name="=HYPERLINK(1)", ip="203.0.113.9")
    await audit.arecord(Action.LOGIN_FAILED, actor_name="bob", details={"username": "bob"})
    await audit.arecord(Action.MAINTENANCE_ON, actor_name="ops")

    response = await staff_client.get(f"{LOG}export.csv", {"action__exact": "login_failed"})

    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv"
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    rows = await read_csv(response)
    assert [(r["action"], r["actor"]) for r in rows] == [
        ("login_failed", "'=HYPERLINK(1)"),  # a formula to a spreadsheet, so defused
        ("login_failed", "bob"),
    ]
    assert rows[0]["ip"] == "203.0.113.9" and rows[1]["details"] == '{"username": "bob"}'


@pytest.mark.django_db(transaction=True)
async def test_the_export_action_streams_the_selected_events(staff_client):
    chosen = await audit.arecord(Action.BREAKER_RESET, target="breaker tools")
    await audit.arecord(Action.BREAKER_RESET, target="breaker openai")

    response = await staff_client.post(
        LOG, {"action": "export_csv", "_selected_action": [chosen.pk], "index": 0}
    )

    rows = await read_csv(response)
    assert [r["target"] for r in rows] == ["breaker tools"]


@pytest.mark.django_db(transaction=True)
async def test_each_export_of_the_log_is_itself_audited(staff_client, admin_user_async):
    chosen = await audit.arecord(Action.BREAKER_RESET, target="breaker tools")
    await audit.arecord(Action.LOGIN_FAILED, actor_name="bob")

    filtered = await staff_client.get(f"{LOG}export.csv", {"action__exact": "login_failed"})
    await read_csv(filtered)
    selected = await staff_client.post(
        LOG, {"action": "export_csv", "_selected_action": [chosen.pk], "index": 0}
    )
    await read_csv(selected)

    exports = [e async for e in AuditEvent.objects.filter(action=Action.EXPORT).order_by("id")]
    assert [e.actor_id for e in exports] == [admin_user_async.pk] * 2
    assert [e.target for e in exports] == [
        "ops_app.auditevent (1 events)",
        "ops_app.auditevent (1 events)",
    ]
    assert exports[0].details == {
        "format": "csv",
        "events": 1,
        "filters": "action__exact=login_failed",
    }
    assert exports[1].details == {"format": "csv", "events": 1, "ids": [chosen.pk]}
    assert exports[0].ip == "127.0.0.1"


@pytest.mark.django_db
def test_the_export_is_for_staff_who_may_view_the_log(client):
    client.force_login(User.objects.create_user("visitor", is_staff=True))

    assert client.get(f"{LOG}export.csv").status_code == 403


@pytest.mark.django_db
def test_the_operations_state_is_shown_read_only(admin_client):
    OpsState.objects.create(pk=OpsState.SINGLETON, maintenance=True)

    page = admin_client.get("/admin/ops_app/opsstate/")

    assert page.status_code == 200 and page.context["cl"].result_count == 1
    assert admin_client.post("/admin/ops_app/opsstate/add/", {}).status_code == 403
