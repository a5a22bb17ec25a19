"""The admin's session page shows each background task where its call was made: the
agent, its status, its steps (the first few, the rest counted), tokens, cost, its result
cut to a bound, who cancelled it and whether it was spoken or kept."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from sessions_app import history
from sessions_app.models import ConversationItem, VoiceSession
from tests.factories import (
    ConversationItemFactory,
    TaskFactory,
    ToolExecutionFactory,
    VoiceSessionFactory,
)
from tests.support import load_support_group
from tools_app.models import Task, ToolExecution

pytestmark = pytest.mark.django_db

START = timezone.now() - timedelta(minutes=10)


@pytest.fixture
def support(client):
    load_support_group()
    user = User.objects.create_user("sam", password="x", is_staff=True)
    user.groups.add(Group.objects.get(name="Support"))
    client.force_login(user)
    return client


def _page(session: VoiceSession) -> str:
    return reverse("admin:sessions_app_voicesession_change", args=[quote(session.pk)])


def _at(seconds: float):
    return START + timedelta(seconds=seconds)


def _said(session, seconds, text, role=ConversationItem.Role.USER):
    ConversationItemFactory(session=session, role=role, text=text, created_at=_at(seconds))


def _call(session, seconds, call_id, name, arguments, heard):
    ConversationItemFactory(
        session=session,
        kind=ConversationItem.Kind.FUNCTION_CALL,
        role=ConversationItem.Role.ASSISTANT,
        text="",
        name=name,
        call_id=call_id,
        arguments=arguments,
        created_at=_at(seconds),
    )
    ConversationItemFactory(
        session=session,
        kind=ConversationItem.Kind.FUNCTION_CALL_OUTPUT,
        role=ConversationItem.Role.TOOL,
        text=heard,
        call_id=call_id,
        created_at=_at(seconds + 0.5),
    )


def _agent_task(session, *, steps: int, output: str = "Notes are in notes.md.") -> Task:
    execution = ToolExecutionFactory(
        session=session,
        call_id="call_delegate",
        tool="delegate",
        arguments={"agent": "researcher", "instruction": "find the release notes"},
        status=ToolExecution.Status.SUCCEEDED,
        output=output,
    )
    task = TaskFactory(
        execution=execution,
        kind=Task.Kind.AGENT,
        agent="researcher",
        summary="delegate — researcher: find the release notes",
        status=Task.Status.SUCCEEDED,
        output=output,
        input_tokens=1200,
        output_tokens=340,
        cost_usd=Decimal("0.012300"),
        delivery=Task.Delivery.SPOKEN,
        finished_at=_at(40),
    )
    for n in range(steps):
        ToolExecutionFactory(
            session=session,
            call_id=f"{task.pk}:step_{n}",
            tool="web_fetch" if n % 2 else "write_file",
            origin=ToolExecution.Origin.AGENT,
            task=task,
            status=ToolExecution.Status.FAILED if n == 1 else ToolExecution.Status.SUCCEEDED,
            output=f"step-{n}-output " + "z" * (5000 if n == 0 else 0),
            error="fetch refused" if n == 1 else "",
        )
    return task


def _conversation(*, steps: int = 3, output: str = "Notes are in notes.md.") -> VoiceSession:
    session = VoiceSessionFactory(
        status=VoiceSession.Status.ENDED,
        connected_at=START,
        ended_at=_at(120),
        duration_seconds=120.0,
    )
    _said(session, 2, "Please research the release notes.")
    _call(
        session,
        4,
        "call_delegate",
        "delegate",
        '{"agent": "researcher", "instruction": "find the release notes"}',
        "Started task; you'll be told when it finishes.",
    )
    _agent_task(session, steps=steps, output=output)
    _said(session, 10, "Meanwhile, what time is it?")
    _said(session, 12, "It is noon.", role=ConversationItem.Role.ASSISTANT)
    _call(session, 20, "call_sleep", "bash", '{"command": "sleep 600"}', "Started task.")
    TaskFactory(
        execution=ToolExecutionFactory(
            session=session, call_id="call_sleep", status=ToolExecution.Status.FAILED
        ),
        status=Task.Status.CANCELLED,
        cancel_requested_at=_at(30),
        cancelled_by="operator",
        delivery=Task.Delivery.KEPT,
        finished_at=_at(31),
    )
    return session


def _entries(html: str) -> list[str]:
    timeline = html.split('id="timeline"', 1)[1].split("</ol>\n    {% else %}", 1)[0]
    return re.findall(r'<li id="\w+" class="[^"]*" data-kind="(\w+)">', timeline)


def test_a_task_is_shown_in_place_with_its_agent_steps_tokens_cost_and_delivery(support):
    session = _conversation()

    response = support.get(_page(session))

    html = response.content.decode()
    assert response.status_code == 200
    task = Task.objects.get(agent="researcher")
    block = html.split(f'data-task="{task.pk}"', 1)[1].split('data-kind="', 1)[0]
    assert "agent <strong>researcher</strong>" in block
    assert "succeeded" in block and "find the release notes" in block
    assert "1540" in block and "in 1200, out 340" in block
    assert "US$0.0123" in block
    assert "spoken: told to the model on the call" in block
    assert "Notes are in notes.md." in block
    assert "write_file" in block and "web_fetch" in block and "fetch refused" in block
    assert "step-2-output" in block
    # Where the call was made: after the request, before the next turn.
    assert (
        html.index("Please research the release notes.")
        < html.index(f'data-task="{task.pk}"')
        < html.index("Meanwhile, what time is it?")
    )
    # The agent's steps are under their task, not lines of the conversation.
    assert _entries(html).count("tool") == 2
    assert f"Task {task.pk} (delegate — researcher: find the release notes) succeeded" in html


def test_a_cancelled_task_says_who_cancelled_it_and_that_it_was_kept(support):
    session = _conversation()

    html = support.get(_page(session)).content.decode()

    task = Task.objects.get(tool="bash")
    block = html.split(f'data-task="{task.pk}"', 1)[1].split('data-kind="', 1)[0]
    assert "tool bash" in block and "cancelled" in block
    assert "Cancelled by</dt><dd>operator" in block
    assert "kept on the session, not spoken: the call had ended" in block


def test_a_long_agent_run_shows_its_first_steps_and_says_how_many_more(support):
    session = _conversation(steps=history.STEPS_SHOWN + 7, output="r" * 100_000)

    html = support.get(_page(session)).content.decode()

    assert html.count("<li><strong>write_file</strong>") + html.count(
        "<li><strong>web_fetch</strong>"
    ) == (history.STEPS_SHOWN)
    assert "7 more steps not shown." in html
    assert f"step-{history.STEPS_SHOWN - 1}-output" in html
    assert f"step-{history.STEPS_SHOWN}-output" not in html
    assert "z" * 300 not in html  # a step's output is cut to a line
    assert "r" * (history.RESULT_SHOWN + 1) not in html
    assert f"Result (100000 characters, the first {history.RESULT_SHOWN} shown)" in html
    assert len(html) < 120_000


def test_the_page_takes_the_same_queries_however_many_steps(support):
    def queries(steps: int) -> int:
        session = _conversation(steps=steps)
        with CaptureQueriesContext(connection) as captured:
            assert support.get(_page(session)).status_code == 200
        VoiceSession.objects.filter(pk=session.pk).delete()
        return len(captured)

    queries(1)  # the first page also fills per-process caches (content types, ...)
    assert queries(2) == queries(60)


def test_a_running_task_shows_its_last_progress_and_is_not_yet_delivered(support):
    session = VoiceSessionFactory(status=VoiceSession.Status.ACTIVE, connected_at=START)
    task = TaskFactory(execution__session=session, progress="line 7: compiling")

    html = support.get(_page(session)).content.decode()

    block = html.split(f'data-task="{task.pk}"', 1)[1]
    assert "running" in block and "line 7: compiling" in block
    assert "not yet: still running" in block
