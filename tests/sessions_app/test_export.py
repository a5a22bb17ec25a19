"""Support staff export the sessions they select from the admin, with their transcripts
and tool calls, as JSON Lines or CSV, streamed as the database hands them over."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.http import StreamingHttpResponse
from django.test import AsyncClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from ops_app.models import AuditEvent
from sessions_app import export
from sessions_app.models import VoiceSession
from tests.factories import ConversationItemFactory, VoiceSessionFactory
from tools_app.models import ToolExecution

SESSIONS = "/admin/sessions_app/voicesession/"
ODD_TEXT = 'She said "no, thanks",\nthen: ça coûte 5 € — 你好 🎧\r\n; end'


@pytest.fixture
async def staff_client():
    client = AsyncClient()
    await client.aforce_login(await User.objects.acreate_superuser("support", password="x-1"))
    return client


async def a_conversation(make_session, make_item, **fields) -> VoiceSession:
    """A session with a user turn, a tool call and its output, and an answer; the answer
    was stored first but said last, so order must come from the times."""
    start = timezone.now() - timedelta(minutes=5)
    session = await make_session(status="ended", created_at=start, **fields)

    def at(seconds: float):
        return start + timedelta(seconds=seconds)

    await make_item(session=session, role="assistant", text="It is sunny.", created_at=at(9))
    await make_item(session=session, role="user", text=ODD_TEXT, created_at=at(1))
    await make_item(
        session=session,
        role="assistant",
        kind="function_call",
        name="weather",
        call_id="call_1",
        arguments='{"city": "Lyon"}',
        text="",
        created_at=at(2),
    )
    await ToolExecution.objects.acreate(
        session=session,
        call_id="call_1",
        tool="weather",
        arguments={"city": "Lyon"},
        origin="sideband",
        status="succeeded",
        output="sunny, 21 °C",
        duration_seconds=0.25,
        started_at=at(2.5),
        finished_at=at(2.75),
    )
    await ToolExecution.objects.filter(session=session).aupdate(created_at=at(2.5))
    await make_item(
        session=session,
        role="tool",
        kind="function_call_output",
        call_id="call_1",
        text="sunny, 21 °C",
        created_at=at(3),
    )
    return session


async def run_action(client, action: str, selected=(), query: str = "", **extra):
    response = await client.post(
        SESSIONS + query,
        {"action": action, "_selected_action": [s.pk for s in selected], "index": 0, **extra},
    )
    assert response.status_code == 200, response
    return response


async def body_of(response) -> bytes:
    return b"".join([chunk async for chunk in response.streaming_content])


def jsonl_records(body: bytes) -> list[dict]:
    # Lines end in "\n" only: text may hold U+2028 and the like, which splitlines() splits.
    return [json.loads(line) for line in body.decode().split("\n") if line]


def csv_rows(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline="")))


@pytest.mark.django_db(transaction=True)
async def test_the_json_lines_export_holds_the_selected_sessions_with_transcript_and_tool_calls(
    staff_client, make_session, make_item, make_api_key
):
    key = await make_api_key(name="kiosk 7")
    chosen = await a_conversation(make_session, make_item, api_key=key, total_tokens=321)
    quiet = await make_session(status="expired", end_reason="never_connected")
    left_out = await a_conversation(make_session, make_item)

    response = await run_action(staff_client, "export_jsonl", [chosen, quiet])

    assert response["Content-Disposition"].startswith('attachment; filename="sessions-')
    assert response["Content-Disposition"].endswith('.jsonl"')
    records = {record["id"]: record for record in jsonl_records(await body_of(response))}
    assert set(records) == {chosen.pk, quiet.pk} and left_out.pk not in records
    record = records[chosen.pk]
    assert record["api_key_name"] == "kiosk 7" and record["caller"] == "API key kiosk 7"
    assert record["api_key_id"] == key.pk and record["total_tokens"] == 321
    assert record["model"] == "gpt-realtime" and record["status"] == "ended"
    assert "recording" not in record and "transcript_json" not in record
    assert [(i["role"], i["kind"], i["text"]) for i in record["items"]] == [
        ("user", "message", ODD_TEXT),
        ("assistant", "function_call", ""),
        ("tool", "function_call_output", "sunny, 21 °C"),
        ("assistant", "message", "It is sunny."),
    ]
    assert record["items"][1]["arguments"] == '{"city": "Lyon"}'
    [tool_call] = record["tool_calls"]
    assert tool_call["call_id"] == "call_1" and tool_call["tool"] == "weather"
    assert tool_call["arguments"] == {"city": "Lyon"} and tool_call["output"] == "sunny, 21 °C"
    assert tool_call["status"] == "succeeded" and tool_call["duration_seconds"] == 0.25
    assert tool_call["finished_at"].startswith(chosen.created_at.date().isoformat())
    assert records[quiet.pk]["items"] == [] and records[quiet.pk]["tool_calls"] == []
    assert records[quiet.pk]["end_reason"] == "never_connected"


@pytest.mark.django_db(transaction=True)
async def test_the_csv_export_has_a_row_per_entry_in_order_with_the_session_columns(
    staff_client, make_session, make_item
):
    chosen = await a_conversation(make_session, make_item, client_ip="198.51.100.7")
    quiet = await make_session(status="expired")
    left_out = await make_session()

    response = await run_action(staff_client, "export_csv", [chosen, quiet])

    assert response["Content-Type"].startswith("text/csv")
    rows = csv_rows(await body_of(response))
    assert {row["session_id"] for row in rows} == {chosen.pk, quiet.pk}
    assert left_out.pk not in {row["session_id"] for row in rows}
    conversation = [row for row in rows if row["session_id"] == chosen.pk]
    assert [(r["entry"], r["role"], r["kind"], r["name"]) for r in conversation] == [
        ("item", "user", "message", ""),
        ("item", "assistant", "function_call", "weather"),
        ("tool_call", "", "", "weather"),
        ("item", "tool", "function_call_output", ""),
        ("item", "assistant", "message", ""),
    ]
    tool_call = conversation[2]
    assert tool_call["arguments"] == '{"city": "Lyon"}' and tool_call["status"] == "succeeded"
    assert tool_call["output"] == "sunny, 21 °C" and tool_call["duration_seconds"] == "0.25"
    assert {r["session_caller"] for r in conversation} == {"anonymous 198.51.100.7"}
    assert {r["session_status"] for r in conversation} == {"ended"}
    [alone] = [row for row in rows if row["session_id"] == quiet.pk]
    assert alone["entry"] == "" and alone["session_status"] == "expired"


@pytest.mark.django_db(transaction=True)
async def test_odd_text_survives_the_csv_and_formulas_are_defused(
    staff_client, make_session, make_item
):
    session = await make_session(status="ended")
    await make_item(session=session, text=ODD_TEXT)
    await make_item(session=session, text='=HYPERLINK("http://x.test","win")')
    await make_item(session=session, text="")

    rows = csv_rows(await body_of(await run_action(staff_client, "export_csv", [session])))

    assert [row["text"] for row in rows] == [ODD_TEXT, '\'=HYPERLINK("http://x.test","win")', ""]


@pytest.mark.django_db(transaction=True)
async def test_select_all_exports_every_session_the_search_finds_as_it_is_read(
    staff_client, make_session, make_item
):
    found = [await a_conversation(make_session, make_item) for _ in range(3)]
    other = await make_session(status="ended")
    await make_item(session=other, text="rain all day")

    response = await run_action(
        staff_client, "export_jsonl", found[:1], "?q=sunny", select_across="1"
    )
    later = await make_session(status="ended")  # after the action answered, before reading
    await make_item(session=later, text="sunny later")
    records = jsonl_records(await body_of(response))

    assert isinstance(response, StreamingHttpResponse) and response.is_async
    ids = [record["id"] for record in records]
    assert sorted(ids) == sorted([s.pk for s in found] + [later.pk])  # each once
    assert other.pk not in ids
    assert all(len(r["items"]) == 4 for r in records if r["id"] != later.pk)


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["export_jsonl", "export_csv"])
def test_staff_who_may_only_view_sessions_can_export_them_and_it_is_audited(client, action):
    reader = User.objects.create_user("reader", is_staff=True)
    reader.user_permissions.add(Permission.objects.get(codename="view_voicesession"))
    client.force_login(reader)
    session = VoiceSessionFactory(status="ended")
    ConversationItemFactory(session=session, text="hello there")

    page = client.get(SESSIONS)
    response = client.post(
        SESSIONS, {"action": action, "_selected_action": [session.pk], "index": 0}
    )

    offered = dict(page.context["action_form"].fields["action"].choices)
    assert "export_jsonl" in offered and "export_csv" in offered
    assert response.status_code == 200 and response.streaming
    assert "hello there" in b"".join(response.streaming_content).decode()
    [event] = AuditEvent.objects.filter(action=AuditEvent.Action.EXPORT)
    assert event.actor == reader and event.details["sessions"] == 1
    assert event.details["ids"] == [session.pk]
    assert event.details["format"] == action.removeprefix("export_")


@pytest.mark.django_db
def test_staff_who_may_not_view_sessions_cannot_export_them(client):
    client.force_login(User.objects.create_user("visitor", is_staff=True))
    session = VoiceSessionFactory(status="ended")

    response = client.post(
        SESSIONS, {"action": "export_csv", "_selected_action": [session.pk], "index": 0}
    )

    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.EXPORT).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("chunks_of", [export.jsonl_chunks, export.csv_chunks])
def test_the_number_of_queries_grows_with_the_chunks_not_the_sessions(monkeypatch, chunks_of):
    sessions = VoiceSessionFactory.create_batch(50, status="ended")
    for session in sessions:
        ConversationItemFactory.create_batch(2, session=session)
        ToolExecution.objects.create(session=session, call_id="call_1", tool="bash")

    def queries(count: int) -> int:
        selected = VoiceSession.objects.filter(pk__in=[s.pk for s in sessions[:count]])
        with CaptureQueriesContext(connection) as captured:
            lines = list(chunks_of(selected))
        assert sum(line.count(b"utterance") for line in lines) == 2 * count
        return len(captured)

    assert queries(5) == queries(50)
    monkeypatch.setattr(export, "CHUNK_SIZE", 10)
    # Five chunks of ten instead of one: two more queries (items, tool calls) for each.
    assert queries(50) == queries(5) + 2 * 4


@pytest.mark.django_db
@pytest.mark.parametrize("chunks_of", [export.jsonl_chunks, export.csv_chunks])
def test_a_tool_calls_huge_arguments_are_exported_cut_never_read_whole(chunks_of):
    session = VoiceSessionFactory(status="ended")
    ToolExecution.objects.create(
        session=session,
        call_id="call_big",
        tool="write_file",
        arguments={"file_path": "a.txt", "content": "q" * 200_000},
    )
    ToolExecution.objects.create(
        session=session, call_id="call_small", tool="read_file", arguments={"file_path": "a.txt"}
    )
    selected = VoiceSession.objects.filter(pk=session.pk)

    with CaptureQueriesContext(connection) as captured:
        body = b"".join(chunks_of(selected)).decode("utf-8-sig")

    assert "q" * 5000 not in body
    assert "q" * 1000 in body and "characters in all]" in body
    assert len(body) < 20_000
    if chunks_of is export.jsonl_chunks:
        [record] = jsonl_records(body.encode())
        big, small = record["tool_calls"]
        assert big["arguments"].startswith('{"content": "qqq')
        assert small["arguments"] == {"file_path": "a.txt"}
    # The cut is made by the database: no query reads the arguments column whole.
    tool_queries = [q["sql"] for q in captured if "tools_app_toolexecution" in q["sql"]]
    assert tool_queries
    assert not any(re.search(r'"arguments"[^)]', sql) for sql in tool_queries)
