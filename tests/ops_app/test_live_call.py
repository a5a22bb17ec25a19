"""A call's live view for staff (/ops/sessions/<id>/live and its socket) and ending one
call (/ops/sessions/<id>/end): who may, what they see as the call goes on, and what an
end leaves behind."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser, Permission, User
from django.test import Client
from django.utils import timezone

from ops_app import actions, consumers, degradation, live_call
from ops_app.consumers import LiveCallConsumer
from ops_app.models import AuditEvent
from sessions_app import events, history, sideband
from sessions_app.models import VoiceSession
from sessions_app.probe import open_call
from tests.factories import (
    ConversationItemFactory,
    TaskFactory,
    VoiceSessionFactory,
    async_create,
)
from tests.support import eventually
from voiceplatform.errors import BadRequest, Conflict, NotFound

pytestmark = pytest.mark.django_db(transaction=True)

WATCHER = ("ops_app.view_operations", "sessions_app.view_voicesession")
ENDER = (*WATCHER, "ops_app.end_call")


def _user(username: str, *perms: str, is_staff: bool = True) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=is_staff)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app, codename=codename)
        )
    return User.objects.get(pk=user.pk)


def _client(*perms: str, username: str = "staff") -> Client:
    client = Client()
    client.force_login(_user(username, *perms))
    return client


def _live(**fields) -> VoiceSession:
    return VoiceSessionFactory(status="active", connected_at=timezone.now(), **fields)


def _page(session: VoiceSession) -> str:
    return f"/ops/sessions/{session.pk}/live"


# -- the page ----------------------------------------------------------------


def test_the_live_view_shows_the_timeline_and_facts_of_the_call():
    session = _live()
    ConversationItemFactory(session=session, text="where is my parcel")
    ConversationItemFactory(session=session, role="assistant", text="Let me look.")

    response = _client(*WATCHER).get(_page(session))

    html = response.content.decode()
    assert response.status_code == 200
    assert "where is my parcel" in html and "Let me look." in html
    assert (
        'id="live-facts"' in html and f'data-ws-path="/ws/ops/sessions/{session.pk}/live/"' in html
    )
    assert "End this call" not in html  # watching is not ending


def test_the_live_view_offers_the_end_form_only_with_the_end_permission():
    session = _live()

    html = _client(*ENDER).get(_page(session)).content.decode()

    assert 'id="end-call"' in html and 'name="reason"' in html


@pytest.mark.parametrize(
    "perms", [(), ("ops_app.view_operations",), ("sessions_app.view_voicesession",)]
)
def test_staff_without_both_view_permissions_get_the_403_page(perms):
    session = _live()

    response = _client(*perms).get(_page(session))

    assert response.status_code == 403 and b"<html" in response.content


def test_an_anonymous_visitor_is_sent_to_the_login():
    response = Client().get(_page(_live()))

    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_an_unknown_session_is_a_404_page_and_a_post_is_not_allowed():
    client = _client(*WATCHER)

    missing = client.get("/ops/sessions/sess_nope/live")
    post = client.post(_page(_live()))

    assert missing.status_code == 404 and b"There is no session" in missing.content
    assert post.status_code == 405


def test_the_session_page_links_to_the_live_view_while_the_call_is_live():
    live, ended = _live(), VoiceSessionFactory(status="ended", ended_at=timezone.now())
    client = _client(*WATCHER)

    live_page = client.get(f"/admin/sessions_app/voicesession/{live.pk}/change/")
    ended_page = client.get(f"/admin/sessions_app/voicesession/{ended.pk}/change/")

    assert f'href="/ops/sessions/{live.pk}/live"' in live_page.content.decode()
    assert "watch-live" not in ended_page.content.decode()


# -- the socket --------------------------------------------------------------


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(consumers, "PUSH_SECONDS", 0.3)


def _socket(user, session_id: str) -> WebsocketCommunicator:
    socket = WebsocketCommunicator(
        LiveCallConsumer.as_asgi(), f"/ws/ops/sessions/{session_id}/live/"
    )
    socket.scope["user"] = user
    socket.scope["url_route"] = {"kwargs": {"session_id": session_id}}
    return socket


async def _until(socket, check, seconds: float = 10.0) -> dict:
    """The first message for which check is true, within seconds."""
    async with asyncio.timeout(seconds):
        while True:
            message = await socket.receive_json_from(timeout=seconds)
            if check(message):
                return message


def _has_text(text: str):
    return lambda m: m["type"] == "live.timeline" and any(text in html for _, html in m["entries"])


@pytest.mark.parametrize("who", ["anonymous", "viewer of the dashboard only", "not staff"])
async def test_the_socket_refuses_whoever_may_not_watch(who):
    session = await sync_to_async(_live)()
    if who == "anonymous":
        user = AnonymousUser()
    elif who == "not staff":
        user = await sync_to_async(_user)("someone", *WATCHER, is_staff=False)
    else:
        user = await sync_to_async(_user)("someone", "ops_app.view_operations")

    connected, code = await _socket(user, session.pk).connect()

    assert (connected, code) == (False, 4403)


async def test_a_new_turn_reaches_the_watcher_as_soon_as_it_is_published(
    quick, monkeypatch, make_item
):
    monkeypatch.setattr(consumers, "PUSH_SECONDS", 30.0)  # only the event can bring it soon
    session = await sync_to_async(_live)()
    await make_item(session=session, text="first words")
    socket = _socket(await sync_to_async(_user)("watcher", *WATCHER), session.pk)
    assert (await socket.connect())[0]
    first = await _until(socket, _has_text("first words"))

    await make_item(session=session, text="second words")
    started = asyncio.get_running_loop().time()
    await events.publish(session.pk, events.LiveEvent.TRANSCRIPT_ITEM, text="second words")
    update = await _until(socket, _has_text("second words"), seconds=5)
    waited = asyncio.get_running_loop().time() - started
    await socket.disconnect()

    assert "order" not in update  # appended at the end, nothing before it moved
    new_keys = {key for key, _ in update["entries"]} - {key for key, _ in first["entries"]}
    assert len(new_keys) == 1
    assert waited < 5


async def test_what_no_event_announced_still_arrives_within_the_refresh(quick, make_item):
    session = await sync_to_async(_live)()
    socket = _socket(await sync_to_async(_user)("watcher", *WATCHER), session.pk)
    assert (await socket.connect())[0]

    await make_item(session=session, text="relayed by the page")

    assert await _until(socket, _has_text("relayed by the page"))
    await socket.disconnect()


async def test_a_running_task_shows_with_its_cancel_button_for_who_may_cancel(quick):
    task = await async_create(TaskFactory)(progress="step 3 of 9")
    await VoiceSession.objects.filter(pk=task.session_id).aupdate(status="active")
    user = await sync_to_async(_user)("watcher", *WATCHER, "tools_app.cancel_task")
    socket = _socket(user, task.session_id)
    assert (await socket.connect())[0]

    update = await _until(socket, lambda m: m["type"] == "ops.update")
    await socket.disconnect()

    facts = update["html"]["live-facts"]
    assert "step 3 of 9" in facts and f"/ops/tasks/{task.pk}/cancel" in facts
    assert "csrfmiddlewaretoken" not in facts  # the page adds its own


async def test_the_feed_says_when_the_call_ended_and_closes(quick):
    session = await sync_to_async(_live)()
    socket = _socket(await sync_to_async(_user)("watcher", *WATCHER), session.pk)
    assert (await socket.connect())[0]
    await _until(socket, lambda m: m["type"] == "ops.update")

    await VoiceSession.objects.filter(pk=session.pk).aupdate(
        status="ended", ended_at=timezone.now(), end_reason="staff"
    )
    await events.publish(session.pk, events.LiveEvent.SESSION_ENDED, reason="staff")
    facts = await _until(socket, lambda m: m["type"] == "ops.update")
    await _until(socket, lambda m: m["type"] == "live.ended")
    closed = await socket.receive_output(timeout=5)

    assert "Staff" in facts["html"]["live-facts"]
    assert closed == {"type": "websocket.close", "code": 1000}


# -- ending one call ----------------------------------------------------------


def test_ending_a_call_records_the_reason_and_returns_to_the_live_view(simulator):
    session = _live()
    client = _client(*ENDER, username="olivia")

    response = client.post(
        f"/ops/sessions/{session.pk}/end",
        {"reason": "  caller is abusive  ", "next": _page(session)},
        REMOTE_ADDR="127.0.0.7",
    )

    session.refresh_from_db()
    assert response.status_code == 302 and response["Location"] == _page(session)
    assert (session.status, session.end_reason) == ("ended", "staff")
    event = AuditEvent.objects.get(action=AuditEvent.Action.CALL_ENDED)
    assert event.actor_name == "olivia" and event.ip == "127.0.0.7"
    assert event.details["reason"] == "caller is abusive"
    assert event.target.startswith(f"sessions_app.voicesession:{session.pk}")


def test_a_foreign_next_is_ignored_for_the_dashboard(simulator):
    session = _live()

    response = _client(*ENDER).post(
        f"/ops/sessions/{session.pk}/end", {"reason": "test", "next": "https://evil.example/"}
    )

    assert response.status_code == 302 and response["Location"] == "/ops/"


@pytest.mark.parametrize(
    ("reason", "status", "says"),
    [("", 400, "Say why the call is ended."), ("x" * 301, 400, "at most 300 characters")],
)
def test_a_bad_reason_shows_the_live_view_again_and_ends_nothing(reason, status, says):
    session = _live()

    response = _client(*ENDER).post(
        f"/ops/sessions/{session.pk}/end", {"reason": reason, "next": _page(session)}
    )

    session.refresh_from_db()
    assert response.status_code == status and says in response.content.decode()
    assert 'id="end-call"' in response.content.decode()
    assert session.status == "active"
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.CALL_ENDED).exists()


def test_ending_an_unknown_or_ended_session_is_refused_with_its_status():
    ended = VoiceSessionFactory(status="ended", ended_at=timezone.now(), end_reason="client")
    client = _client(*ENDER)

    unknown = client.post("/ops/sessions/sess_nope/end", {"reason": "x"})
    again = client.post(f"/ops/sessions/{ended.pk}/end", {"reason": "x"})
    odd = client.post(f"/ops/sessions/{'x' * 60}/end", {"reason": "x"})

    assert (unknown.status_code, again.status_code, odd.status_code) == (404, 409, 404)
    ended.refresh_from_db()
    assert ended.end_reason == "client"


@pytest.mark.parametrize("perms", [WATCHER, ("ops_app.view_operations", "ops_app.operate")])
def test_ending_needs_the_end_permission(perms):
    session = _live()

    response = _client(*perms).post(f"/ops/sessions/{session.pk}/end", {"reason": "x"})

    session.refresh_from_db()
    assert response.status_code == 403 and session.status == "active"


async def test_the_model_says_goodbye_on_the_call_before_it_is_hung_up(http, simulator):
    call = await open_call(http)
    session_id = call.session["session_id"]
    staff = await sync_to_async(_user)("ender", *ENDER)

    said = await actions.end_call(actor=staff, session_id=session_id, reason="test call")

    goodbye = await call.wait_for(
        lambda e: (
            e["type"] == "response.output_audio_transcript.done"
            and "support team has to end this call" in e["transcript"]
        ),
        what="the goodbye",
    )
    await call.close()
    session = await VoiceSession.objects.aget(pk=session_id)
    assert said is True and goodbye
    assert (session.status, session.end_reason) == ("ended", "staff")
    assert simulator.call(call.call_id)["state"] == "hung_up"
    with pytest.raises(Conflict):
        await actions.end_call(actor=staff, session_id=session_id, reason="again")


async def test_end_call_checks_its_input_before_touching_anything():
    staff = await sync_to_async(_user)("ender", *ENDER)
    session = await sync_to_async(_live)()

    with pytest.raises(BadRequest):
        await actions.end_call(actor=staff, session_id=session.pk, reason=" \n ")
    with pytest.raises(NotFound):
        await actions.end_call(actor=staff, session_id="x" * 400, reason="why")
    assert (await VoiceSession.objects.aget(pk=session.pk)).status == "active"


def test_the_feed_renders_again_only_the_entries_that_changed():
    session = _live()
    first = ConversationItemFactory(session=session, text="hello", status="in_progress")
    ConversationItemFactory(session=session, role="assistant", text="hi there")
    renderer = live_call.Entries()
    renders = []
    template_render = renderer.template.render
    renderer.template.render = lambda context: renders.append(context) or template_render(context)

    before = renderer.render(history.conversation(session)[0])
    first.status, first.text = "completed", "hello, is this support?"
    first.save()
    after = renderer.render(history.conversation(session)[0])

    assert len(renders) == len(before) + 1  # all once, then only the turn that changed
    changed = [key for key in after if after[key] != before.get(key)]
    assert len(changed) == 1 and "is this support?" in after[changed[0]]


async def test_a_change_of_the_service_level_while_watching_is_a_line_of_the_timeline(
    quick, monkeypatch
):
    session = await sync_to_async(_live)()
    levels = iter([1, 1, 2])

    async def current(**kwargs):
        level = next(levels, 2)
        reasons = ["tools unavailable: breaker open or no worker answers"] if level == 2 else []
        return degradation.ServiceState("degraded", level, reasons, {})

    monkeypatch.setattr(degradation, "current", current)
    socket = _socket(await sync_to_async(_user)("watcher", *WATCHER), session.pk)
    assert (await socket.connect())[0]

    update = await _until(socket, _has_text("Service level now 2 (reduced)"))
    await socket.disconnect()

    assert any("tools unavailable" in html for _, html in update["entries"])


def test_a_task_cancelled_from_the_live_view_returns_to_it():
    task = TaskFactory()
    VoiceSession.objects.filter(pk=task.session_id).update(status="active")
    client = _client(*WATCHER, "tools_app.cancel_task")
    page = f"/ops/sessions/{task.session_id}/live"

    response = client.post(f"/ops/tasks/{task.pk}/cancel", {"next": page})

    task.refresh_from_db()
    assert response.status_code == 302 and response["Location"] == page
    assert task.cancel_requested_at is not None


def test_a_refused_action_never_shows_a_session_to_who_may_not_watch_it():
    secret = _live()
    ConversationItemFactory(session=secret, text="a private matter")
    client = _client("ops_app.view_operations", "tools_app.cancel_task")

    response = client.post("/ops/tasks/nope/cancel", {"next": _page(secret)})

    assert response.status_code == 404
    assert "a private matter" not in response.content.decode()


@pytest.mark.parametrize("session_id", ["a b", "x" * 41, "sess~1"])
async def test_the_socket_refuses_what_is_no_session_id(session_id):
    user = await sync_to_async(_user)("watcher", *WATCHER)

    connected, code = await _socket(user, session_id).connect()

    assert (connected, code) == (False, 4403)


async def test_a_call_being_ended_is_ended_and_audited_even_if_the_request_goes_away(
    monkeypatch,
):
    async def slow_goodbye(call_id, words, *, seconds):
        await asyncio.sleep(0.5)
        return True

    monkeypatch.setattr(sideband, "say_last_words", slow_goodbye)
    session = await sync_to_async(_live)(call_id="rtc_going")
    staff = await sync_to_async(_user)("ender", *ENDER)
    request = asyncio.ensure_future(
        actions.end_call(actor=staff, session_id=session.pk, reason="impatient browser")
    )
    await asyncio.sleep(0.1)

    request.cancel()  # the browser gave up waiting for the goodbye

    async def audited():
        return await AuditEvent.objects.filter(action=AuditEvent.Action.CALL_ENDED).aexists()

    assert await eventually(audited, timeout=10)
    ended = await VoiceSession.objects.aget(pk=session.pk)
    assert (ended.status, ended.end_reason) == ("ended", "staff")
