"""What support staff see in the admin: the session list with its counts, filters and
search (full text on PostgreSQL), a session as a conversation, its recording with byte
ranges, and the Support group's reach."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Group, User
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from sessions_app import search
from sessions_app.models import ConversationItem, VoiceSession
from tests.factories import ApiKeyFactory, ConversationItemFactory, VoiceSessionFactory
from tests.support import load_support_group
from tools_app.models import ToolExecution

pytestmark = pytest.mark.django_db

LIST = "/admin/sessions_app/voicesession/"


def _support_user(name: str = "sam") -> User:
    load_support_group()
    user = User.objects.create_user(name, password="x", is_staff=True)
    user.groups.add(Group.objects.get(name="Support"))
    return user


@pytest.fixture
def support(client):
    client.force_login(_support_user())
    return client


def _conversation(words: str, *, failed_tool: bool = False, **fields) -> VoiceSession:
    start = timezone.now() - timedelta(minutes=5)
    session = VoiceSessionFactory(
        status=VoiceSession.Status.ENDED,
        end_reason=VoiceSession.EndReason.CLIENT,
        connected_at=start,
        ended_at=start + timedelta(seconds=95),
        duration_seconds=95.0,
        **fields,
    )
    ConversationItemFactory(session=session, text=words, created_at=start + timedelta(seconds=2))
    ConversationItemFactory(
        session=session,
        role=ConversationItem.Role.ASSISTANT,
        text="Let me look.",
        created_at=start + timedelta(seconds=4),
    )
    ConversationItemFactory(
        session=session,
        kind=ConversationItem.Kind.FUNCTION_CALL,
        role=ConversationItem.Role.ASSISTANT,
        text="",
        name="bash",
        call_id=f"call_{session.pk[-8:]}",
        arguments='{"command": "ls"}',
        created_at=start + timedelta(seconds=5),
    )
    ToolExecution.objects.create(
        session=session,
        call_id=f"call_{session.pk[-8:]}",
        tool="bash",
        arguments={"command": "ls"},
        status=ToolExecution.Status.FAILED if failed_tool else ToolExecution.Status.SUCCEEDED,
        output="" if failed_tool else "notes.txt",
        error="exit 2" if failed_tool else "",
        duration_seconds=0.05,
    )
    return session


def _page(session: VoiceSession) -> str:
    return reverse("admin:sessions_app_voicesession_change", args=[quote(session.pk)])


def _rows(response) -> list[VoiceSession]:
    return list(response.context["cl"].result_list)


def test_the_list_shows_counts_caller_and_cost_without_a_query_per_row(support):
    def page_queries(sessions: int) -> int:
        VoiceSession.objects.all().delete()
        key = ApiKeyFactory(name="billing backend")
        for n in range(sessions):
            _conversation(f"hello {n}", failed_tool=n % 2 == 0, api_key=key)
        with CaptureQueriesContext(connection) as queries:
            response = support.get(LIST, {"failed_tool_call": "yes", "tool": "bash"})
        assert response.status_code == 200
        return len(queries)

    assert page_queries(3) == page_queries(40)
    response = support.get(LIST)
    row = _rows(response)[0]
    assert (row.turns, row.tool_calls) == (2, 1)
    html = response.content.decode()
    assert "key “billing backend”" in html and "1:35" in html
    assert "(1 failed)" in html and 'id="total-cost"' in html


def test_filters_find_sessions_by_tool_failure_user_key_and_end_reason(support):
    user = User.objects.create_user("caller")
    key = ApiKeyFactory(name="kiosk")
    failed = _conversation("it broke", failed_tool=True, user=user)
    fine = _conversation("all good", api_key=key)
    expired = VoiceSessionFactory(
        status=VoiceSession.Status.EXPIRED, end_reason=VoiceSession.EndReason.MAX_DURATION
    )

    def found(**query) -> set[str]:
        response = support.get(LIST, query)
        assert response.status_code == 200
        return {row.pk for row in _rows(response)}

    assert found(failed_tool_call="yes") == {failed.pk}
    assert found(failed_tool_call="no") == {fine.pk, expired.pk}
    assert found(tool="bash") == {failed.pk, fine.pk}
    assert found(user__id__exact=user.pk) == {failed.pk}
    assert found(api_key__id__exact=key.pk) == {fine.pk}
    assert found(end_reason="max_duration") == {expired.pk}
    assert found(degradation_level="1", status="ended") == {failed.pk, fine.pk}
    assert found(degradation_level="3") == set()


def test_the_list_filters_offer_support_no_accounts_or_keys_they_may_not_view(
    support, admin_client
):
    User.objects.create_superuser("root-operator", password="x")
    key = ApiKeyFactory(name="payroll integration")
    _conversation("hello")

    for_support = support.get(LIST).content.decode()
    for_admin = admin_client.get(LIST).content.decode()

    assert "root-operator" not in for_support and "payroll integration" not in for_support
    assert "user__id__exact" not in for_support and "api_key__id__exact" not in for_support
    assert "root-operator" in for_admin and "payroll integration" in for_admin
    assert f"api_key__id__exact={key.pk}" in for_admin


def test_the_changelist_sums_the_cost_of_the_whole_filtered_list(support):
    for cost in ("0.1000", "0.2500"):
        _conversation("priced", cost_usd=Decimal(cost))
    VoiceSessionFactory(cost_usd=Decimal("5"), status=VoiceSession.Status.ACTIVE)

    response = support.get(LIST, {"status": "ended"})

    assert response.context["total_cost"] == Decimal("0.35")
    assert "US$0.3500" in response.content.decode()


def test_full_text_search_finds_a_word_said_ranks_the_closer_match_first_and_marks_it(
    support,
):
    passing = _conversation("My invoice was mentioned once, then we talked about the weather.")
    closer = _conversation("The invoice is wrong. Which invoice? The March invoice total.")
    _conversation("Nothing to see here.")

    response = support.get(LIST, {"q": "invoices"})  # stemmed: invoice(s)

    assert [row.pk for row in _rows(response)] == [closer.pk, passing.pk]
    assert "<mark>invoice</mark>" in response.content.decode()


def test_search_escapes_what_was_said_and_marks_only_the_match(support):
    _conversation("<script>alert(1)</script> refund please")

    html = support.get(LIST, {"q": "refund"}).content.decode()
    found = search.sessions_matching(VoiceSession.objects.all(), "refund").get()

    assert "<script>alert(1)" not in html and "<mark>refund</mark> please" in html
    # Whatever the database's headline keeps of the line, it reaches the page as text.
    setattr(found, search.MATCH, "<b>bold</b> \x02refund\x03")
    assert search.highlighted(found) == "&lt;b&gt;bold&lt;/b&gt; <mark>refund</mark>"


def test_search_finds_sessions_by_id_call_user_key_and_address(support):
    user = User.objects.create_user("maria")
    by_user = _conversation("one", user=user)
    by_key = _conversation("two", api_key=ApiKeyFactory(name="Front desk kiosk"))
    by_ip = _conversation("three", client_ip="198.51.100.7")
    by_call = _conversation("four", call_id="rtc_0123456789abcdef")

    def found(term: str) -> set[str]:
        return {row.pk for row in _rows(support.get(LIST, {"q": term}))}

    assert found("maria") == {by_user.pk}
    assert found("desk kiosk") == {by_key.pk}
    assert found("198.51.100.7") == {by_ip.pk}
    assert found("rtc_0123456789abcdef") == {by_call.pk}
    assert found(by_user.pk) == {by_user.pk}


def test_search_finds_a_session_or_call_by_the_first_characters_of_its_id(support):
    one, two = _conversation("one"), _conversation("two", call_id="rtc_feedbeef0001")

    def found(term: str) -> set[str]:
        return {row.pk for row in _rows(support.get(LIST, {"q": term}))}

    assert found(one.pk[:12]) == {one.pk}  # as copied, cut, from a log line
    assert found("rtc_feedbe") == {two.pk}
    assert two.pk not in found("sess_")  # too short to be a start of an id: a word


# The transcript's index (migration 0009), and the summaries' and topics' (0014).
@pytest.mark.parametrize("index", ["sessions_item_text_search", "sessions_summary_search"])
def test_the_search_indexes_serve_the_search_query(index):
    if connection.vendor != "postgresql":
        pytest.skip("full-text search is PostgreSQL's")
    query = search.sessions_matching(VoiceSession.objects.all(), "invoice")
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert index in plan


def _summarized(words: str, summary: str, outcome: str, topics: list[str]) -> VoiceSession:
    return _conversation(
        words,
        summary=summary,
        outcome=outcome,
        topics=topics,
        summary_state=VoiceSession.SummaryState.DONE,
        summarized_at=timezone.now(),
    )


def test_the_list_shows_each_calls_outcome_and_filters_by_it(support):
    resolved = _summarized("hi", "The caller got a refund.", "resolved", ["refund"])
    follow_up = _summarized("hi", "Someone calls back.", "follow_up", ["call back"])
    failed = _conversation("hi", summary_state=VoiceSession.SummaryState.FAILED)

    def found(**query) -> set[str]:
        response = support.get(LIST, query)
        assert response.status_code == 200
        return {row.pk for row in _rows(response)}

    html = support.get(LIST).content.decode()

    assert found(outcome__exact="resolved") == {resolved.pk}
    assert found(outcome__exact="follow_up") == {follow_up.pk}
    assert found(outcome__exact="not_resolved") == set()
    assert found() == {resolved.pk, follow_up.pk, failed.pk}
    assert '<span class="outcome-resolved">Resolved</span>' in html
    assert '<span class="outcome-follow_up">Follow-up needed</span>' in html
    assert '<small class="quiet">summary failed</small>' in html
    assert "?outcome__exact=follow_up" in html  # the filter, in the side bar


def test_search_finds_a_session_by_a_word_of_its_summary_or_a_topic(support):
    refunded = _summarized(
        "My order came twice.", "The caller was refunded for a duplicate order.", "resolved", []
    )
    tagged = _summarized("Hello there.", "A short call.", "not_resolved", ["shipping address"])
    _summarized("My order came twice.", "Nothing was done.", "not_resolved", [])

    def found(term: str) -> list[str]:
        return [row.pk for row in _rows(support.get(LIST, {"q": term}))]

    by_summary = support.get(LIST, {"q": "refund"}).content.decode()

    assert found("refund") == [refunded.pk]  # stemmed: refunded
    assert found("shipping") == [tagged.pk]
    assert "<mark>refunded</mark>" in by_summary  # the summary is the best match shown


def test_a_session_page_shows_its_summary_outcome_and_topics_above_the_conversation(support):
    session = _summarized(
        "Please list my files",
        "The caller asked for their files and got the list.",
        "resolved",
        ["files", "workspace"],
    )

    html = support.get(_page(session)).content.decode()

    assert html.index('id="facts"') < html.index('id="call-summary"') < html.index('id="timeline"')
    assert '<p id="summary-text">The caller asked for their files and got the list.</p>' in html
    assert 'id="summary-outcome">Resolved</span>' in html
    assert "<li>files</li><li>workspace</li>" in html


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"summary_state": "pending"}, "Being written."),
        (
            {"summary_state": "skipped", "summary_note": "Too little was said (4 words)."},
            "Not summarized. Too little was said (4 words).",
        ),
        (
            {"summary_state": "failed", "summary_note": "Failed after 4 tries: RateLimitError"},
            "The summary could not be written. Failed after 4 tries: RateLimitError",
        ),
        ({}, "None: summaries were off, or not yet written, when it ended."),
    ],
)
def test_a_session_page_without_a_summary_says_why(support, fields, said):
    session = _conversation("hi", **fields)

    html = support.get(_page(session)).content.decode()

    assert f'<p class="note" id="summary-status">{said}</p>' in html


def test_a_session_page_reads_as_a_conversation_with_facts_first(support):
    session = _conversation(
        "Please list my files",
        user=User.objects.create_user("ada"),
        cost_usd=Decimal("0.0123"),
        audio_stats={"samples": 3, "rtt_seconds_avg": 0.042, "loss_ratio": 0.01},
        tools=[{"type": "function", "name": "bash", "parameters": {"type": "object"}}],
    )

    response = support.get(_page(session))

    html = response.content.decode()
    assert response.status_code == 200
    entries = response.context["timeline"]
    assert [e.kind for e in entries] == ["event", "user", "assistant", "tool", "event"]
    tool = entries[3]
    assert (tool.name, tool.status, tool.output) == ("bash", "succeeded", "notes.txt")
    assert [e.offset for e in entries[:4]] == ["+0:00", "+0:02", "+0:04", "+0:05"]
    assert html.index('id="facts"') < html.index('id="timeline"')
    assert "ada" in html and "US$0.0123" in html and "round trip 42 ms" in html
    assert "Ended: Client" in html and "webhookevent/?session__id__exact=" in html
    assert "<li>bash</li>" in html  # tools as names; schemas behind a <details>
    assert 'name="_save"' not in html  # read-only


def test_long_tool_output_is_collapsed_and_failures_show_their_error(support):
    session = _conversation("go", failed_tool=True)
    ToolExecution.objects.create(
        session=session,
        call_id="call_long",
        tool="read_file",
        output="line\n" * 50,
        status=ToolExecution.Status.SUCCEEDED,
    )

    html = support.get(_page(session)).content.decode()

    assert "<summary>Output (250 characters)</summary>" in html
    assert 'class="tool failed"' in html and "exit 2" in html


def test_a_failed_tool_calls_error_is_shown_once(support):
    session = _conversation("go")
    told = "Started.\n"
    ToolExecution.objects.create(
        session=session,
        call_id="call_failed",
        tool="read_file",
        output=told + "No such file: notes.md",  # the tool's failure, as the model hears it
        error="No such file: notes.md",
        status=ToolExecution.Status.FAILED,
    )

    html = support.get(_page(session)).content.decode()

    assert html.count("No such file: notes.md") == 1 and "Started." in html


@pytest.fixture
def recording(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    session = _conversation("recorded")
    session.recording.save("call.webm", ContentFile(bytes(range(256)) * 4))
    return session


def test_the_recording_plays_in_the_page_and_seeks_with_byte_ranges(support, recording):
    page = support.get(_page(recording)).content.decode()
    url = recording.recording.url

    whole = support.get(url)
    part = support.get(url, headers={"Range": "bytes=100-199"})
    tail = support.get(url, headers={"Range": "bytes=-24"})

    assert f'<audio id="recording" controls preload="metadata" src="{url}"' in page
    assert whole.status_code == 200 and whole["Accept-Ranges"] == "bytes"
    assert len(b"".join(whole.streaming_content)) == 1024
    assert part.status_code == 206 and part["Content-Range"] == "bytes 100-199/1024"
    assert b"".join(part.streaming_content) == (bytes(range(256)) * 4)[100:200]
    assert tail["Content-Range"] == "bytes 1000-1023/1024"


@pytest.mark.parametrize("header", ["bytes=1024-", "bytes=5000-6000", "bytes=-0"])
def test_a_range_past_the_end_is_a_416_in_json(support, recording, header):
    response = support.get(recording.recording.url, headers={"Range": header})

    assert response.status_code == 416
    assert response.json()["error"]["code"] == "range_not_satisfiable"
    assert response["Content-Range"] == "bytes */1024"


@pytest.mark.parametrize(
    "header", ["bytes=0-1,5-6", "bytes=9-2", "lines=1-2", "bytes=x-", "bytes=\u0661\u0660-"]
)
def test_a_range_we_do_not_serve_gets_the_whole_file(support, recording, header):
    response = support.get(recording.recording.url, headers={"Range": header})

    assert response.status_code == 200


MANY = 5000  # digits: past what int() parses from text


@pytest.mark.parametrize(
    ("header", "status", "content_range"),
    [
        ("bytes=" + "9" * MANY + "-", 416, "bytes */1024"),
        ("bytes=" + "9" * MANY + "-" + "9" * MANY, 416, "bytes */1024"),
        ("bytes=0-" + "9" * MANY, 206, "bytes 0-1023/1024"),
        ("bytes=-" + "9" * MANY, 206, "bytes 0-1023/1024"),
        ("bytes=" + "0" * MANY + "5-" + "0" * MANY + "9", 206, "bytes 5-9/1024"),
    ],
)
def test_a_range_with_thousands_of_digits_is_answered_as_any_other(
    support, recording, header, status, content_range
):
    response = support.get(recording.recording.url, headers={"Range": header})

    assert response.status_code == status
    assert response["Content-Range"] == content_range


@pytest.mark.parametrize(
    "url",
    [
        f"{LIST}?q=a%00b",
        f"{LIST}?tool=bash%00",
        f"{LIST}?status=%00",
        f"{LIST}?x%00=1",
        "/admin/tools_app/toolexecution/?tool=%00",
        "/admin/tools_app/toolexecution/?session__id__exact=sess_%00",
        f"{LIST}sess_%00/change/",
    ],
)
def test_a_nul_character_in_a_search_filter_or_id_is_a_400(support, url):
    response = support.get(url)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize("filter_name", ["user__id__exact", "api_key__id__exact"])
@pytest.mark.parametrize("digit", ["\u00b2", "\u2075"])  # superscript 2 and 5
def test_a_filter_id_in_digits_no_id_is_made_of_says_the_filter_is_wrong(
    admin_client, filter_name, digit
):
    ApiKeyFactory()  # a filter shows (and reads its id) once it has a choice

    response = admin_client.get(LIST, {filter_name: digit})

    assert response.status_code == 302 and response["Location"].endswith("?e=1")


ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x660 + digit) for digit in range(10)))


def test_a_filter_id_in_another_scripts_decimal_digits_filters_by_that_number(support):
    session = _conversation("hello", user=User.objects.create_user("olga"))

    response = support.get(LIST, {"user__id__exact": str(session.user_id).translate(ARABIC_INDIC)})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [session]


def test_support_reads_history_but_not_keys_grants_users_or_audit(support):
    session = _conversation("hello")
    allowed = [
        LIST,
        _page(session),
        "/admin/tools_app/toolexecution/",
        "/admin/sessions_app/webhookevent/",
    ]
    refused = [
        "/admin/sessions_app/apikey/",
        "/admin/tools_app/toolgrant/",
        "/admin/auth/user/",
        "/admin/auth/group/",
        "/admin/ops_app/auditevent/",
    ]

    assert [support.get(url).status_code for url in allowed] == [200] * len(allowed)
    assert [support.get(url).status_code for url in refused] == [403] * len(refused)
    refusal = support.get(refused[0])
    assert refusal["Content-Type"].startswith("text/html")  # a page, not the API's JSON
    assert "but are not authorized to access this page" in refusal.content.decode()
    assert 'href="/admin/"' in refusal.content.decode()
    html = support.get(_page(session)).content.decode()
    assert "Audit events about this session" not in html


def test_the_support_group_holds_only_view_permissions_on_history():
    load_support_group()
    codenames = set(
        Group.objects.get(name="Support").permissions.values_list("codename", flat=True)
    )

    assert codenames == {
        "view_voicesession",
        "view_conversationitem",
        "view_toolexecution",
        "view_task",
        "view_webhookevent",
    }


def test_a_tool_calls_huge_arguments_are_shown_cut_on_the_session_and_tool_pages(support):
    session = _conversation("write it down")
    huge = ToolExecution.objects.create(
        session=session,
        call_id="call_huge",
        tool="write_file",
        arguments={"file_path": "a.txt", "content": "q" * 200_000},
        status=ToolExecution.Status.SUCCEEDED,
    )
    support.force_login(User.objects.create_superuser("root", password="x"))
    tool_page = reverse("admin:tools_app_toolexecution_change", args=[huge.pk])
    tool_list = reverse("admin:tools_app_toolexecution_changelist")

    with CaptureQueriesContext(connection) as captured:
        pages = [support.get(url) for url in (_page(session), tool_page, tool_list)]

    for response in pages:
        html = response.content.decode()
        assert response.status_code == 200
        assert "q" * 5000 not in html and len(html) < 100_000
    assert (
        "q" * 1000 in pages[0].content.decode()
        and "characters in all]" in pages[1].content.decode()
    )
    # No query reads the arguments column whole: they are cut in the database.
    tool_queries = [q["sql"] for q in captured if '"tools_app_toolexecution"' in q["sql"]]
    assert tool_queries
    assert not any(re.search(r'"arguments"[^)]', sql) for sql in tool_queries)
