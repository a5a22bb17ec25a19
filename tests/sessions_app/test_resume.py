"""Resume: GET /sessions lists the caller's own past sessions; POST /session
{"resume": id} carries on from one of them, with a bounded context of it in the new
session's instructions (the simulator says what it got), its workspace while still
kept, and a link both ways; nobody resumes another's or an anonymous session."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.test import AsyncClient
from django.urls import reverse
from django.utils import timezone

from sessions_app.models import VoiceSession
from sessions_app.probe import open_call
from sessions_app.resume import HEADING
from tools_app.workspace import session_workspaces

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def ada():
    return await User.objects.acreate_user("ada", password="pw")


@pytest.fixture
async def signed_in(ada) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(ada)
    return client


def ended(minutes_ago: float = 5) -> dict:
    at = timezone.now() - timedelta(minutes=minutes_ago)
    return {"status": "ended", "ended_at": at, "created_at": at - timedelta(minutes=2)}


async def a_conversation(make_session, make_item, *, turns: list[str], **fields) -> VoiceSession:
    """An ended session in which the user and the assistant took turns saying turns."""
    session = await make_session(**{**ended(), **fields})
    for n, text in enumerate(turns):
        await make_item(
            session=session,
            role="user" if n % 2 == 0 else "assistant",
            text=text,
            created_at=session.created_at + timedelta(seconds=n),
        )
    return session


async def resume(client: AsyncClient, session_id, **headers):
    return await client.post(
        "/session", {"resume": session_id}, content_type="application/json", headers=headers
    )


# --- GET /sessions ------------------------------------------------------------------------


async def test_a_user_lists_its_own_sessions_newest_first_a_page_at_a_time(
    signed_in, ada, make_session, make_item, make_api_key
):
    mine = [
        await a_conversation(
            make_session, make_item, user=ada, turns=[f"first words {n}", "ok"], **ended(60 - n)
        )
        for n in range(3)
    ]
    live = await make_session(user=ada, status="active")
    await make_session(**ended())  # anonymous
    await make_session(user=await User.objects.acreate_user("bob"), **ended())
    await make_session(user=ada, api_key=await make_api_key(user=ada), **ended())  # its key's

    first = await signed_in.get("/sessions?limit=2")
    second = await signed_in.get(first.json()["next"])

    assert first.status_code == second.status_code == 200
    assert first["Cache-Control"] == "private, no-store"
    listed = first.json()["sessions"] + second.json()["sessions"]
    assert [row["session_id"] for row in listed] == [live.pk] + [s.pk for s in reversed(mine)]
    assert first.json()["next"] == "/sessions?page=2&limit=2"
    assert second.json()["next"] is None and second.json()["page"] == 2
    newest_ended = listed[1]
    assert newest_ended["title"] == "first words 2"
    assert newest_ended["status"] == "ended" and newest_ended["resumable"] is True
    assert newest_ended["ended_at"] == mine[2].ended_at.isoformat()
    assert listed[0]["resumable"] is False and listed[0]["title"] == ""


async def test_the_title_is_the_first_user_turn_shortened_to_one_line(
    signed_in, ada, make_session, make_item
):
    long = "please   help me\nplan " + "a very long trip " * 20  # 357 characters
    await a_conversation(make_session, make_item, user=ada, turns=[long, "Sure."])

    title = (await signed_in.get("/sessions")).json()["sessions"][0]["title"]

    assert title.startswith("please help me plan a very long trip")
    assert len(title) == 80 and title.endswith("…")


async def test_an_api_key_lists_only_the_sessions_it_started(api, make_session, make_api_key):
    key, other = await make_api_key(), await make_api_key()
    its = await make_session(api_key=key, **ended())
    await make_session(api_key=other, **ended())

    response = await api.get("/sessions", headers={"Authorization": f"Bearer {key.raw}"})

    assert response.status_code == 200
    assert [row["session_id"] for row in response.json()["sessions"]] == [its.pk]


async def test_anonymous_callers_and_bad_keys_get_401(api):
    anonymous = await api.get("/sessions")
    bad_key = await api.get("/sessions", headers={"Authorization": "Bearer vpk_nope"})

    assert anonymous.status_code == bad_key.status_code == 401
    assert anonymous.json()["error"]["code"] == "login_required"
    assert bad_key.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("page=0", "invalid_page"),
        ("page=x", "invalid_page"),
        ("page=1.0", "invalid_page"),
        ("page=1001", "invalid_page"),
        ("limit=51", "invalid_limit"),
        ("limit=-1", "invalid_limit"),
        ("limit=", "invalid_limit"),
        ("limit=99999999999999999999999999", "invalid_limit"),
        ("colour=red", "unknown_field"),
        ("page=1&page=2", "bad_request"),
    ],
)
async def test_bad_query_parameters_are_400(signed_in, query, code):
    response = await signed_in.get(f"/sessions?{query}")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


async def test_posting_to_the_list_is_405(signed_in):
    response = await signed_in.post("/sessions")

    assert response.status_code == 405 and response["Allow"] == "GET"


# --- POST /session {"resume": id} ---------------------------------------------------------


async def test_a_resumed_session_carries_the_earlier_context_upstream(
    signed_in, ada, http, simulator, make_session, make_item
):
    earlier = await a_conversation(
        make_session,
        make_item,
        user=ada,
        voice="cedar",
        turns=["Let's plan a trip to Lisbon.", "Gladly.", "Book the hotel by the river.", "Done."],
    )

    response = await resume(signed_in, earlier.pk)
    assert response.status_code == 201, response.content
    call = await open_call(http, session=response.json())
    try:
        await call.wait_for(lambda e: e["type"] == "response.done")  # the scripted greeting
        call.say("What do you remember?")
        said = await call.wait_for(
            lambda e: (
                e["type"] == "response.output_audio_transcript.done"
                and "earlier conversation" in e["transcript"]
            )
        )
        upstream = simulator.call(call.call_id)["session"]
    finally:
        await http.post(call.session["urls"]["end"], headers=_bearer(call.session))
        await call.close()

    assert "Let's plan a trip to Lisbon." in said["transcript"]
    assert "User: Book the hotel by the river." in said["transcript"]
    assert "Assistant: Done." in said["transcript"]
    assert HEADING in upstream["instructions"]
    assert upstream["instructions"].startswith("You are a helpful voice assistant.")
    assert upstream["audio"]["output"]["voice"] == "cedar"  # the earlier one's, unless asked


async def test_without_a_resume_the_simulator_remembers_nothing(http, simulator):
    call = await open_call(http)
    try:
        call.say("What were we talking about?")
        said = await call.wait_for(
            lambda e: (
                e["type"] == "response.output_audio_transcript.done"
                and "remember" in e["transcript"]
            )
        )
    finally:
        await http.post(call.session["urls"]["end"], headers=_bearer(call.session))
        await call.close()

    assert said["transcript"] == "I don't remember an earlier conversation."


async def test_the_context_keeps_the_first_turn_and_the_last_turns_within_the_budget(
    signed_in, ada, simulator, settings, make_session, make_item
):
    settings.RESUME_CONTEXT_MAX_TOKENS = 100
    turns = ["What started it all"] + [f"turn number {n:03d} of the middle" for n in range(1, 60)]
    earlier = await a_conversation(make_session, make_item, user=ada, turns=turns)

    response = await resume(signed_in, earlier.pk)

    session = await VoiceSession.objects.aget(pk=response.json()["session_id"])
    context = session.instructions[session.instructions.index(HEADING) :]
    assert len(context) <= 100 * 4
    assert "What started it all" in context
    assert context.endswith("turn number 059 of the middle")
    assert "turn number 001" not in context


async def test_a_session_where_nothing_was_said_resumes_without_context(
    signed_in, ada, simulator, make_session
):
    earlier = await make_session(user=ada, instructions="Old.", **ended())

    response = await resume(signed_in, earlier.pk)

    session = await VoiceSession.objects.aget(pk=response.json()["session_id"])
    assert response.status_code == 201
    assert HEADING not in session.instructions and session.resumed_from_id == earlier.pk


async def test_both_sessions_link_to_each_other_in_the_admin(
    signed_in, ada, simulator, make_session, make_item
):
    earlier = await a_conversation(make_session, make_item, user=ada, turns=["hello", "hi"])
    response = await resume(signed_in, earlier.pk)
    later_id = response.json()["session_id"]
    staff = AsyncClient()
    await staff.aforce_login(await User.objects.acreate_superuser("support", password="x"))

    def page_of(session_id):
        return reverse("admin:sessions_app_voicesession_change", args=[quote(session_id)])

    earlier_page = (await staff.get(page_of(earlier.pk))).content.decode()
    later_page = (await staff.get(page_of(later_id))).content.decode()
    listed = (await signed_in.get("/sessions")).json()["sessions"]

    assert f'href="{page_of(later_id)}"' in earlier_page and "Resumed as" in earlier_page
    assert f'href="{page_of(earlier.pk)}"' in later_page and "Resumed from" in later_page
    assert listed[0]["session_id"] == later_id and listed[0]["resumed_from"] == earlier.pk


async def test_an_api_key_resumes_its_own_session(api, simulator, make_session, make_api_key):
    key = await make_api_key()
    earlier = await make_session(api_key=key, **ended())

    response = await resume(api, earlier.pk, Authorization=f"Bearer {key.raw}")

    assert response.status_code == 201
    session = await VoiceSession.objects.aget(pk=response.json()["session_id"])
    assert session.resumed_from_id == earlier.pk and session.api_key_id == key.pk


async def test_nobody_resumes_another_callers_session_and_learns_nothing_of_it(
    signed_in, ada, api, simulator, make_session, make_api_key
):
    bobs = await make_session(user=await User.objects.acreate_user("bob"), **ended())
    anonymous = await make_session(**ended())
    key = await make_api_key(user=ada)
    keys = await make_session(user=ada, api_key=key, **ended())
    adas = await make_session(user=ada, **ended())

    answers = [
        await resume(signed_in, bobs.pk),
        await resume(signed_in, anonymous.pk),
        await resume(signed_in, "sess_does_not_exist"),
        await resume(signed_in, keys.pk),  # the key's, not the user's in the browser
        await resume(api, anonymous.pk),  # anonymous sessions cannot be resumed
        await resume(api, adas.pk),
        await resume(api, adas.pk, Authorization=f"Bearer {key.raw}"),
    ]

    assert [answer.status_code for answer in answers] == [404] * len(answers)
    assert {answer.json()["error"]["code"] for answer in answers} == {"session_not_found"}
    assert len({answer.json()["error"]["message"] for answer in answers}) == 1
    assert await VoiceSession.objects.acount() == 4  # no session was made


async def test_a_live_session_must_end_before_it_is_resumed(
    signed_in, ada, simulator, make_session
):
    live = await make_session(user=ada, status="active")
    overdue = await make_session(
        user=ada, status="active", expires_at=timezone.now() - timedelta(seconds=1)
    )

    refused = await resume(signed_in, live.pk)
    allowed = await resume(signed_in, overdue.pk)

    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "session_live"
    assert allowed.status_code == 201  # it was over already: it is ended, then resumed
    await overdue.arefresh_from_db()
    assert overdue.status == "expired"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"resume": ""}, "invalid_resume"),
        ({"resume": 42}, "invalid_resume"),
        ({"resume": ["sess_x"]}, "invalid_resume"),
        ({"resume": "s" * 41}, "invalid_resume"),
        ({"resume": "sess_x", "colour": "red"}, "unknown_field"),
    ],
)
async def test_bad_resume_bodies_are_400(signed_in, simulator, body, code):
    response = await signed_in.post("/session", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


# --- the workspace --------------------------------------------------------------------------


async def _tool(client, session: dict, tool: str, call_id: str, arguments: dict) -> dict:
    response = await client.post(
        f"/tools/{tool}",
        {"call_id": call_id, "arguments": arguments},
        content_type="application/json",
        headers={"Authorization": f"Bearer {session['session_token']}"},
    )
    assert response.status_code == 200, response.content
    return response.json()


async def _started(client, body: dict | None = None) -> dict:
    response = await client.post("/session", body or {}, content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()


async def test_a_resumed_session_works_in_the_earlier_workspace_while_it_is_kept(
    signed_in, simulator, settings, tmp_path
):
    settings.TOOL_WORKSPACE_ROOT = tmp_path / "workspaces"
    first = await _started(signed_in)
    await _tool(signed_in, first, "write_file", "c1", {"file_path": "notes.txt", "content": "x1"})
    await signed_in.post(first["urls"]["end"], headers=_bearer(first))

    second = await _started(signed_in, {"resume": first["session_id"]})
    read = await _tool(signed_in, second, "read_file", "c2", {"file_path": "notes.txt"})
    await signed_in.post(second["urls"]["end"], headers=_bearer(second))
    third = await _started(signed_in, {"resume": second["session_id"]})

    assert read["status"] == "succeeded" and "x1" in read["output"]
    resumed = await VoiceSession.objects.aget(pk=third["session_id"])
    assert resumed.workspace == first["session_id"]  # the chain keeps the one workspace
    assert session_workspaces() == [first["session_id"]]


async def test_a_resumed_session_gets_a_fresh_workspace_once_the_earlier_one_is_gone(
    signed_in, ada, simulator, settings, tmp_path, make_session
):
    settings.TOOL_WORKSPACE_ROOT = tmp_path / "workspaces"
    earlier = await make_session(user=ada, **ended(minutes_ago=600))

    second = await _started(signed_in, {"resume": earlier.pk})
    read = await _tool(signed_in, second, "read_file", "c1", {"file_path": "notes.txt"})

    resumed = await VoiceSession.objects.aget(pk=second["session_id"])
    assert resumed.workspace == resumed.pk and resumed.resumed_from_id == earlier.pk
    assert read["status"] == "failed"


def _bearer(session: dict) -> dict:
    return {"Authorization": f"Bearer {session['session_token']}"}


async def test_the_page_lists_recent_conversations_for_signed_in_users_only(api, signed_in):
    anonymous = (await api.get("/")).content.decode()
    theirs = (await signed_in.get("/")).content.decode()

    assert 'id="recent"' not in anonymous
    assert 'id="recent"' in theirs and 'data-url="/sessions?limit=5"' in theirs
