"""/ops/: who may look, who may switch, what a switch leaves behind, and what the page
says about the last hour."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from ops_app import breakers, dashboard, state
from ops_app.models import AuditEvent, OpsState
from sessions_app.models import VoiceSession
from tests.factories import VoiceSessionFactory
from tools_app.models import Task, ToolExecution

pytestmark = pytest.mark.django_db

SWITCHES = [
    ("/ops/maintenance", {"message": "Upgrading", "eta": "14:30 UTC"}),
    ("/ops/maintenance/off", {}),
    ("/ops/level", {"level": "2", "reason": "worker upgrade", "hours": "1"}),
    ("/ops/level/release", {}),
    ("/ops/breakers/amplifier/reset", {}),
]


def _recorded():
    """The audit events the test's actions left (signing the test users in leaves its
    own login events)."""
    return AuditEvent.objects.exclude(
        action__in=[AuditEvent.Action.LOGIN, AuditEvent.Action.LOGOUT]
    )


def _user(username: str, *codenames: str, is_staff: bool = True) -> User:
    # Staff, as everyone who signs in through the admin is.
    user = User.objects.create_user(username, password="pw", is_staff=is_staff)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="ops_app", codename__in=codenames)
    )
    return user


def _client(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def viewer() -> Client:
    return _client(_user("viewer", "view_operations"))


@pytest.fixture
def operator() -> Client:
    return _client(_user("operator", "view_operations", "operate"))


def _forms(html: str) -> list[str]:
    return [path for path, _ in SWITCHES if f'action="{path}"' in html]


def _open_amplifier_breaker(settings) -> None:
    for _ in range(settings.AMPLIFIER_BREAKER_FAILURES):
        breakers.record(breakers.amplifier(), ok=False)


@pytest.fixture(autouse=True)
def _closed_breakers():
    yield
    breakers.reset(breakers.amplifier())


def test_an_anonymous_visitor_is_sent_to_the_admin_login():
    page = Client().get("/ops/")

    assert page.status_code == 302
    assert page["Location"] == "/admin/login/?next=/ops/"


@pytest.mark.parametrize("staff", [False, True])
def test_a_user_without_the_view_permission_gets_the_403_page(staff):
    user = _user("someone", is_staff=staff)

    page = _client(user).get("/ops/")

    assert page.status_code == 403
    assert "Not allowed" in page.content.decode()
    assert "Can view the operations dashboard" in page.content.decode()


def test_a_viewer_sees_the_level_sessions_and_audit_but_no_forms(viewer):
    VoiceSessionFactory(status="active", pod="pod-a")
    AuditEvent.objects.create(action="maintenance_on", actor_name="alice", target="maintenance")

    page = viewer.get("/ops/")

    html = page.content.decode()
    assert page.status_code == 200
    for section in dashboard.SECTIONS:
        assert f'id="{section}"' in html
    assert "pod-a" in html and "alice" in html and "view only" in html
    assert _forms(html) == []
    assert "data-csrf-token" not in html


def test_an_audit_action_this_version_does_not_know_is_shown_as_recorded(viewer):
    AuditEvent.objects.create(action="added_later", actor_name="bob")

    page = viewer.get("/ops/")

    assert page.status_code == 200 and "added_later" in page.content.decode()


def test_an_operator_sees_every_switch(operator, settings):
    page = operator.get("/ops/")
    _open_amplifier_breaker(settings)
    state.forget()
    operator.post("/ops/maintenance", {"message": "m"})
    operator.post("/ops/level", {"level": "2", "reason": "r", "hours": "1"})
    switched = operator.get("/ops/")

    assert _forms(page.content.decode()) == [
        "/ops/maintenance",
        "/ops/level",
        "/ops/breakers/amplifier/reset",
    ]
    assert _forms(switched.content.decode()) == [
        "/ops/maintenance/off",
        "/ops/level/release",
        "/ops/breakers/amplifier/reset",
    ]


@pytest.mark.parametrize(("path", "data"), SWITCHES)
def test_a_viewer_is_refused_every_switch_and_nothing_changes(viewer, path, data):
    response = viewer.post(path, data)

    assert response.status_code == 403
    assert _recorded().count() == 0
    assert not OpsState.objects.exists()


@pytest.mark.parametrize(("path", "data"), SWITCHES)
def test_an_operator_no_longer_staff_is_refused_on_the_session_already_open(path, data):
    user = _user("operator", "view_operations", "operate")
    client = _client(user)
    assert client.get("/ops/").status_code == 200
    User.objects.filter(pk=user.pk).update(is_staff=False)

    page = client.get("/ops/")
    response = client.post(path, data)

    assert page.status_code == response.status_code == 403
    assert _recorded().count() == 0
    assert not OpsState.objects.exists()


@pytest.mark.parametrize(("path", "data"), SWITCHES)
def test_an_anonymous_switch_is_sent_to_the_login(path, data):
    response = Client().post(path, data)

    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert _recorded().count() == 0


def test_a_switch_without_the_csrf_token_is_refused():
    client = Client(enforce_csrf_checks=True)
    client.force_login(_user("operator", "view_operations", "operate"))

    response = client.post("/ops/maintenance", {"message": "m"})

    assert response.status_code == 403
    assert _recorded().count() == 0


def test_switching_maintenance_on_and_off_leaves_one_audit_event_each(operator):
    on = operator.post(
        "/ops/maintenance",
        {"message": "Upgrading the database", "eta": "14:30 UTC"},
        REMOTE_ADDR="127.0.0.9",
    )
    ops = OpsState.objects.get()
    page = operator.get("/ops/")
    off = operator.post("/ops/maintenance/off")

    assert (on.status_code, on["Location"]) == (302, "/ops/")
    assert (ops.maintenance, ops.maintenance_message, ops.maintenance_eta) == (
        True,
        "Upgrading the database",
        "14:30 UTC",
    )
    assert "Maintenance is on." in page.content.decode()
    assert off.status_code == 302 and not OpsState.objects.get().maintenance
    events = list(_recorded().order_by("id"))
    assert [(e.action, e.actor_name) for e in events] == [
        ("maintenance_on", "operator"),
        ("maintenance_off", "operator"),
    ]
    assert events[0].ip == "127.0.0.9"
    assert events[0].details["eta"] == "14:30 UTC"


def test_maintenance_on_with_end_live_ends_the_live_sessions(operator, simulator):
    live = VoiceSessionFactory(status="active")

    operator.post("/ops/maintenance", {"message": "now", "end_live": "on"})

    live.refresh_from_db()
    assert (live.status, live.end_reason) == ("ended", "maintenance")
    assert _recorded().get().details["sessions_ended"] == 1


def test_forcing_and_releasing_a_level_leaves_one_audit_event_each(operator):
    forced = operator.post("/ops/level", {"level": "3", "reason": "db failover", "hours": "2"})
    ops = OpsState.objects.get()
    released = operator.post("/ops/level/release")

    assert forced.status_code == 302 and released.status_code == 302
    assert (ops.forced_level, ops.forced_reason) == (3, "db failover")
    assert timedelta(hours=1.9) < ops.forced_until - timezone.now() <= timedelta(hours=2)
    assert OpsState.objects.get().forced_level is None
    assert [e.action for e in _recorded().order_by("id")] == [
        "level_forced",
        "level_released",
    ]


def test_resetting_a_breaker_closes_it_and_leaves_one_audit_event(operator, settings):
    _open_amplifier_breaker(settings)

    response = operator.post("/ops/breakers/amplifier/reset")

    assert response.status_code == 302
    assert breakers.state_of(breakers.amplifier()) == "closed"
    event = _recorded().get()
    assert (event.action, event.target, event.details) == (
        "breaker_reset",
        "breaker amplifier",
        {"state_before": "open"},
    )


@pytest.mark.parametrize(
    ("path", "data", "message"),
    [
        ("/ops/maintenance", {"message": ""}, "This field is required."),
        ("/ops/maintenance", {"message": "x" * 301}, "at most 300 characters"),
        ("/ops/maintenance", {"message": "m", "eta": "y" * 81}, "at most 80 characters"),
        ("/ops/maintenance", {"message": "a\x00b"}, "Null characters are not allowed."),
        ("/ops/level", {"level": "4", "reason": "r", "hours": "1"}, "Select a valid choice."),
        ("/ops/level", {"level": "two", "reason": "r", "hours": "1"}, "Select a valid choice."),
        ("/ops/level", {"level": "2", "reason": "  ", "hours": "1"}, "This field is required."),
        ("/ops/level", {"level": "2", "reason": "r", "hours": "0"}, "up to 24 hours"),
        ("/ops/level", {"level": "2", "reason": "r", "hours": "48"}, "up to 24 hours"),
        ("/ops/level", {"level": "2", "reason": "r", "hours": "nan"}, "Enter a number."),
        ("/ops/level", {"level": "2", "reason": "r", "hours": "soon"}, "Enter a number."),
        ("/ops/breakers/nonesuch/reset", {}, "There is no breaker named"),
    ],
)
def test_bad_input_shows_the_page_again_with_the_reason_and_stores_nothing(
    operator, path, data, message
):
    response = operator.post(path, data)

    assert response.status_code == 400
    html = response.content.decode()
    assert message in html
    assert 'id="ops-level"' in html  # the whole page, not an error stub
    assert _recorded().count() == 0
    assert not OpsState.objects.exists()


def test_a_refused_form_keeps_what_was_typed_and_marks_the_field(operator):
    response = operator.post("/ops/maintenance", {"message": "", "eta": "15:00 UTC"})

    html = response.content.decode()
    assert 'value="15:00 UTC"' in html
    assert 'aria-invalid="true"' in html


def test_a_get_on_a_switch_is_not_allowed(operator):
    assert operator.get("/ops/maintenance").status_code == 405


def _sessions_and_tools(count: int) -> None:
    now = timezone.now()
    sessions = VoiceSession.objects.bulk_create(
        VoiceSession(
            status=["active", "ended", "failed", "created"][i % 4],
            source="web",
            model="gpt-realtime",
            voice="marin",
            pod=f"pod-{i % 3}",
            created_at=now - timedelta(minutes=i % 70),
            connected_at=now - timedelta(minutes=i % 70) + timedelta(seconds=1 + i % 5),
            expires_at=now + timedelta(minutes=15),
        )
        for i in range(count)
    )
    executions = ToolExecution.objects.bulk_create(
        ToolExecution(
            session=session,
            call_id=f"call_{i}",
            tool=["bash", "read_file"][i % 2],
            status=["succeeded", "failed", "running", "queued"][i % 4],
            duration_seconds=0.1 * (i % 20),
        )
        for i, session in enumerate(sessions)
    )
    Task.objects.bulk_create(
        Task(session_id=run.session_id, execution=run, tool=run.tool, progress="step 1")
        for run in executions
        if run.status == "running"
    )


@pytest.mark.parametrize("count", [10, 400])
def test_the_snapshot_takes_the_same_few_queries_however_many_sessions(count):
    _sessions_and_tools(count)

    with CaptureQueriesContext(connection) as queries:
        snap = async_to_sync(dashboard.snapshot)()
        dashboard.render(snap, can_operate=True)

    assert len(queries) <= 12, [q["sql"][:80] for q in queries]
    live = snap["live_sessions"]
    assert len(live["rows"]) == min(live["count"], dashboard.LISTED)
    tasks = snap["running_tasks"]
    assert len(tasks["rows"]) == min(tasks["count"], dashboard.LISTED) > 0
    in_window = VoiceSession.objects.filter(created_at__gte=snap["hour"]["since"]).count()
    assert snap["hour"]["created"] == in_window > 0


def test_the_last_hour_counts_sessions_service_errors_tools_and_p95():
    now = timezone.now()
    ok, failed, with_failed_tool, with_refused_tool, old = (
        VoiceSessionFactory(
            status="ended", connected_at=now, created_at=now - timedelta(seconds=2)
        ),
        VoiceSessionFactory(status="failed"),
        VoiceSessionFactory(status="ended"),
        VoiceSessionFactory(status="ended"),
        VoiceSessionFactory(status="failed", created_at=now - timedelta(hours=2)),
    )
    for i, seconds in enumerate([0.5] * 19 + [9.0]):
        ToolExecution.objects.create(
            session=ok, call_id=f"c{i}", tool="bash", status="succeeded", duration_seconds=seconds
        )
    ToolExecution.objects.create(
        session=with_failed_tool,
        call_id="x",
        tool="read_file",
        status="failed",
        failure="worker_lost",
    )
    # A tool's own answers: a refused path, a tool this server has not configured.
    ToolExecution.objects.create(
        session=with_refused_tool,
        call_id="y",
        tool="read_file",
        status="failed",
        failure="path_refused",
    )
    ToolExecution.objects.create(
        session=with_refused_tool,
        call_id="z",
        tool="web_search",
        status="failed",
        failure="not_configured",
    )

    hour = async_to_sync(dashboard.snapshot)()["hour"]

    assert (hour["created"], hour["failed"]) == (4, 2)
    assert hour["error_rate"] == pytest.approx(2 / 4)
    assert sum(bucket["created"] for bucket in hour["buckets"]) == 4
    assert hour["buckets"][-1]["created"] == 4  # all just now
    assert [(t["tool"], t["succeeded"], t["failed"]) for t in hour["tools"]] == [
        ("bash", 20, 0),
        ("read_file", 0, 2),
        ("web_search", 0, 1),
    ]
    p95 = {row["name"]: (row["p95"], row["samples"]) for row in hour["latencies"]}
    assert p95["connect"] == (pytest.approx(2.0), 1)
    assert p95["bash"] == (0.5, 20)  # nearest rank: the 19th of 20
    assert failed.pk and old.pk


@pytest.mark.django_db(transaction=True)
async def test_the_page_answers_in_maintenance(api):
    await sync_to_async(OpsState.objects.create)(pk=OpsState.SINGLETON, maintenance=True)
    state.forget()
    user = await sync_to_async(User.objects.create_superuser)("root", password="pw")
    await api.aforce_login(user)

    page = await api.get("/ops/")

    assert page.status_code == 200
    assert "Switch maintenance off" in page.content.decode()
