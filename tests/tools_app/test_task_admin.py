"""The admin's task list, for support staff: read-only, filtered by status and kind,
searched by task or session id."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tests.factories import TaskFactory, VoiceSessionFactory
from tests.support import load_support_group
from tools_app.models import Task

pytestmark = pytest.mark.django_db

LIST = reverse("admin:tools_app_task_changelist")


@pytest.fixture
def support(client):
    load_support_group()
    user = User.objects.create_user("sam", password="x", is_staff=True)
    user.groups.add(Group.objects.get(name="Support"))
    client.force_login(user)
    return client


def _tasks() -> dict[str, Task]:
    now = timezone.now()
    return {
        "running": TaskFactory(summary="bash — sleep 20"),
        "agent": TaskFactory(
            execution__tool="delegate",
            kind=Task.Kind.AGENT,
            agent="researcher",
            status=Task.Status.SUCCEEDED,
            created_at=now - timedelta(seconds=90),
            finished_at=now - timedelta(seconds=60),
        ),
        "cancelled": TaskFactory(
            status=Task.Status.CANCELLED,
            cancel_requested_at=now,
            cancelled_by="operator",
            finished_at=now,
        ),
    }


def _listed(response) -> set[str]:
    assert response.status_code == 200
    return {task.pk for task in response.context["cl"].result_list}


def test_support_lists_tasks_with_session_what_status_duration_and_who_cancelled(support):
    tasks = _tasks()

    response = support.get(LIST)

    html = response.content.decode()
    assert _listed(response) == {task.pk for task in tasks.values()}
    for task in tasks.values():
        assert task.pk in html and task.session_id in html
    assert "agent researcher" in html and "tool bash" in html
    assert "30.0 s" in html and "running" in html
    assert "operator" in html


def test_support_filters_by_status_and_kind_and_searches_by_task_or_session_id(support):
    tasks = _tasks()

    assert _listed(support.get(LIST, {"status__exact": "cancelled"})) == {tasks["cancelled"].pk}
    assert _listed(support.get(LIST, {"kind__exact": "agent"})) == {tasks["agent"].pk}
    assert _listed(support.get(LIST, {"q": tasks["running"].pk})) == {tasks["running"].pk}
    assert _listed(support.get(LIST, {"q": tasks["agent"].session_id})) == {tasks["agent"].pk}


def test_a_task_is_read_only_and_its_page_shows_its_result(support):
    task = TaskFactory(status=Task.Status.FAILED, error="exit 2", finished_at=timezone.now())
    page = reverse("admin:tools_app_task_change", args=[quote(task.pk)])

    shown = support.get(page)
    changed = support.post(page, {"status": "succeeded"})
    deleted = support.post(reverse("admin:tools_app_task_delete", args=[quote(task.pk)]))
    added = support.get(reverse("admin:tools_app_task_add"))

    assert shown.status_code == 200 and "exit 2" in shown.content.decode()
    assert (changed.status_code, deleted.status_code, added.status_code) == (403, 403, 403)
    task.refresh_from_db()
    assert task.status == Task.Status.FAILED


def test_staff_outside_support_without_the_view_permission_are_refused():
    client = Client()
    client.force_login(User.objects.create_user("nobody", password="x", is_staff=True))
    TaskFactory()

    assert client.get(LIST).status_code == 403


def test_the_list_loads_no_results_and_takes_the_same_queries_however_many_tasks(support):
    def queries(count: int) -> int:
        Task.objects.all().delete()
        session = VoiceSessionFactory()
        for _ in range(count):
            TaskFactory(execution__session=session, output="q" * 50_000)
        with CaptureQueriesContext(connection) as captured:
            response = support.get(LIST)
        assert response.status_code == 200 and "q" * 1000 not in response.content.decode()
        return len(captured)

    queries(1)  # the first page also fills per-process caches
    assert queries(2) == queries(40)
