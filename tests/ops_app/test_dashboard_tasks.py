"""/ops/ and background tasks: the tasks running across the fleet, listed with their
session, what they do, how long and how far; and the Cancel action, for staff who hold
tools_app.cancel_task, audited with the operator as actor."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from ops_app import dashboard, exporter
from ops_app.metrics import voice_tasks_running
from ops_app.models import AuditEvent
from tests.factories import TaskFactory, VoiceSessionFactory
from tools_app.models import Task

pytestmark = pytest.mark.django_db

OPS = ("view_operations", "operate")


def _user(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def canceller() -> tuple[Client, User]:
    user = _user("operator", *OPS, "cancel_task")
    return _client(user), user


def _cancels() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=AuditEvent.Action.TASK_CANCELLED))


def _running(**fields) -> Task:
    session = VoiceSessionFactory(status="active")
    return TaskFactory(execution__session=session, **fields)


def test_the_dashboard_lists_the_running_tasks_with_their_session_and_progress():
    task = _running(
        summary="bash — sleep 20; echo done",
        progress="line 3 of 20",
        created_at=timezone.now(),
    )
    _running(
        kind=Task.Kind.AGENT,
        tool="delegate",
        agent="researcher",
        summary="delegate — researcher: find the release notes",
        cancel_requested_at=timezone.now(),
        cancelled_by="caller",
    )
    _running(status=Task.Status.SUCCEEDED, summary="bash — finished long ago")
    viewer = _client(_user("viewer", "view_operations"))

    page = viewer.get("/ops/")

    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="ops-tasks"' in html
    assert "Tasks running" in html
    assert '<span class="count">2</span>' in html
    assert task.pk in html and "bash — sleep 20; echo done" in html and "line 3 of 20" in html
    assert "agent researcher" in html and "find the release notes" in html
    assert "requested</span> by caller" in html
    assert "finished long ago" not in html
    session_page = f"/admin/sessions_app/voicesession/{quote(task.session_id)}/change/"
    assert f'href="{session_page}"' in html
    assert f'action="/ops/tasks/{task.pk}/cancel"' not in html  # no permission to cancel


def test_an_operator_who_may_cancel_sees_a_cancel_form_for_tasks_not_being_cancelled(
    canceller,
):
    client, _ = canceller
    task = _running()
    asked = _running(cancel_requested_at=timezone.now(), cancelled_by="model")

    html = client.get("/ops/").content.decode()
    live = dashboard.render(async_to_sync(dashboard.snapshot)(), can_operate=True, can_cancel=True)

    assert f'action="/ops/tasks/{task.pk}/cancel"' in html
    assert f'action="/ops/tasks/{asked.pk}/cancel"' not in html
    assert "data-csrf-token" in html  # for the forms the live feed brings
    assert f'action="/ops/tasks/{task.pk}/cancel"' in live["ops-tasks"]
    assert "csrfmiddlewaretoken" not in live["ops-tasks"]  # the page's script adds it


def test_an_operator_cancels_a_running_task_and_the_audit_event_names_them(canceller):
    client, user = canceller
    task = _running()

    response = client.post(f"/ops/tasks/{task.pk}/cancel", REMOTE_ADDR="127.0.0.7")
    page = client.get("/ops/")

    task.refresh_from_db()
    assert (response.status_code, response["Location"]) == (302, "/ops/")
    assert task.cancel_requested_at is not None and task.cancelled_by == "operator"
    assert task.status == Task.Status.RUNNING  # its worker ends it, as from any door
    [event] = _cancels()
    assert (event.actor_id, event.actor_name, event.target, event.ip) == (
        user.pk,
        "operator",
        task.pk,
        "127.0.0.7",
    )
    assert event.details == {"session": task.session_id, "tool": "bash"}
    html = page.content.decode()
    assert f"Task {task.pk} is being cancelled" in html
    assert "requested</span> by operator" in html


@pytest.mark.parametrize("codenames", [OPS, ("cancel_task",)])
def test_staff_without_the_cancel_permission_or_the_view_permission_are_refused(codenames):
    client = _client(_user("someone", *codenames))
    task = _running()

    response = client.post(f"/ops/tasks/{task.pk}/cancel")

    task.refresh_from_db()
    assert response.status_code == 403
    assert "Not allowed" in response.content.decode()
    assert task.cancel_requested_at is None and task.cancelled_by == ""
    assert _cancels() == []


def test_an_anonymous_cancel_is_sent_to_the_login_and_a_get_is_not_allowed(canceller):
    client, _ = canceller
    task = _running()

    anonymous = Client().post(f"/ops/tasks/{task.pk}/cancel")
    get = client.get(f"/ops/tasks/{task.pk}/cancel")

    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")
    assert get.status_code == 405
    task.refresh_from_db()
    assert task.cancel_requested_at is None and _cancels() == []


def test_a_cancel_without_the_csrf_token_is_refused():
    client = Client(enforce_csrf_checks=True)
    client.force_login(_user("operator", *OPS, "cancel_task"))
    task = _running()

    response = client.post(f"/ops/tasks/{task.pk}/cancel")

    task.refresh_from_db()
    assert response.status_code == 403 and task.cancel_requested_at is None


@pytest.mark.parametrize("task_id", ["task_nope", "x" * 300, "t%C3%A9", "a%20b"])
def test_an_unknown_task_shows_the_page_with_a_404_and_changes_nothing(canceller, task_id):
    client, _ = canceller
    task = _running()

    response = client.post(f"/ops/tasks/{task_id}/cancel")

    html = response.content.decode()
    assert response.status_code == 404
    assert "There is no task" in html and 'id="ops-tasks"' in html  # the whole page
    task.refresh_from_db()
    assert task.cancel_requested_at is None and _cancels() == []


@pytest.mark.parametrize(("task_id", "status"), [("a%00b", 400), ("..%2F", 404)])
def test_an_address_no_task_id_fits_is_refused_before_the_view(canceller, task_id, status):
    client, _ = canceller

    response = client.post(f"/ops/tasks/{task_id}/cancel")

    assert response.status_code == status and _cancels() == []


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"status": Task.Status.SUCCEEDED}, "succeeded already"),
        ({"status": Task.Status.CANCELLED, "cancelled_by": "caller"}, "cancelled already"),
        (
            {"cancel_requested_at": timezone.now(), "cancelled_by": "model"},
            "is being cancelled already",
        ),
    ],
)
def test_a_task_finished_or_being_cancelled_gives_a_clear_409(canceller, fields, said):
    client, _ = canceller
    task = _running(**fields)

    response = client.post(f"/ops/tasks/{task.pk}/cancel")

    html = response.content.decode()
    assert response.status_code == 409
    assert f"Task {task.pk} {said}" in html and 'id="ops-tasks"' in html
    task.refresh_from_db()
    assert task.cancelled_by == fields.get("cancelled_by", "") and _cancels() == []


def test_the_list_is_bounded_and_says_how_many_are_left_out(monkeypatch):
    monkeypatch.setattr(dashboard, "LISTED", 2)
    old = [
        _running(created_at=timezone.now() - timedelta(minutes=m), summary=f"task {m}")
        for m in (9, 8, 7)
    ]

    snap = async_to_sync(dashboard.snapshot)()
    html = dashboard.render(snap, can_operate=False)["ops-tasks"]

    assert snap["running_tasks"]["count"] == 3
    assert [row["id"] for row in snap["running_tasks"]["rows"]] == [old[0].pk, old[1].pk]
    assert "The oldest 2 of 3 are listed." in html


def test_the_metrics_gauge_counts_the_running_tasks_of_the_whole_fleet():
    _running()
    _running()
    _running(status=Task.Status.FAILED)

    async_to_sync(exporter.refresh)()

    assert voice_tasks_running._value.get() == 2
