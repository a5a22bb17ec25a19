"""Support staff browse history in the admin; they cannot rewrite it."""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from sessions_app.models import ApiKey
from tests.factories import ApiKeyFactory, ConversationItemFactory, VoiceSessionFactory

pytestmark = pytest.mark.django_db


def _page(session, view: str = "change") -> str:
    return reverse(f"admin:sessions_app_voicesession_{view}", args=[quote(session.pk)])


def test_the_session_page_shows_the_transcript_in_order(admin_client):
    session = VoiceSessionFactory(status="ended", call_id="rtc_abc")
    ConversationItemFactory(session=session, role="user", text="first words")
    ConversationItemFactory(session=session, role="assistant", text="second words")

    page = admin_client.get(_page(session))

    assert page.status_code == 200
    html = page.content.decode()
    assert html.index("first words") < html.index("second words")
    assert 'name="_save"' not in html  # read-only


@pytest.mark.parametrize("term", ["rtc_abc", "needle phrase"])
def test_sessions_are_found_by_call_id_or_transcript_text(admin_client, term):
    wanted = VoiceSessionFactory(call_id="rtc_abc")
    ConversationItemFactory(session=wanted, text="a needle phrase here")
    ConversationItemFactory(session=wanted, text="another needle phrase")
    other = VoiceSessionFactory()

    page = admin_client.get("/admin/sessions_app/voicesession/", {"q": term})

    found = [row.pk for row in page.context["cl"].result_list]
    assert found == [wanted.pk] and other.pk not in found  # once, though two items match


def test_the_list_filters_by_status(admin_client):
    VoiceSessionFactory(status="ended")
    live = VoiceSessionFactory(status="active")

    page = admin_client.get("/admin/sessions_app/voicesession/", {"status__exact": "active"})

    assert page.status_code == 200 and page.context["cl"].result_count == 1
    assert [row.pk for row in page.context["cl"].result_list] == [live.pk]


def test_history_cannot_be_edited_or_deleted(admin_client):
    session = VoiceSessionFactory(status="ended")
    edit = admin_client.post(_page(session), {"status": "active"})
    delete = admin_client.post(_page(session, "delete"), {"post": "yes"})

    assert edit.status_code == 403 and delete.status_code == 403
    session.refresh_from_db()
    assert session.status == "ended"


def test_adding_an_api_key_shows_it_once_and_stores_only_its_hash(admin_client):
    response = admin_client.post("/admin/sessions_app/apikey/add/", {"name": "kiosk"})

    html = response.content.decode()
    [raw] = re.findall(r'<code id="api-key">([^<]+)</code>', html)
    key = ApiKey.objects.get(name="kiosk")
    assert response.status_code == 200 and "copy it now" in html.lower()
    assert raw.startswith("vpk_") and html.count(raw) == 1
    assert key.key_hash == ApiKey.hash(raw)
    assert raw not in str(ApiKey.objects.values_list())
    assert "no-store" in response["Cache-Control"]


def test_a_new_api_key_never_travels_in_a_cookie(admin_client):
    response = admin_client.post("/admin/sessions_app/apikey/add/", {"name": "kiosk"})
    following = admin_client.get("/admin/sessions_app/apikey/")

    [raw] = re.findall(r'<code id="api-key">([^<]+)</code>', response.content.decode())
    set_cookies = [
        morsel.OutputString()
        for answer in (response, following)
        for morsel in answer.cookies.values()
    ]
    assert "messages" not in response.cookies
    assert not any(raw in cookie for cookie in set_cookies)
    assert raw not in following.content.decode()  # shown once, not again on the list


def test_staff_who_may_only_view_api_keys_cannot_revoke_them(client):
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_apikey"))
    client.force_login(viewer)
    key = ApiKeyFactory(name="kiosk")

    listed = client.get("/admin/sessions_app/apikey/")
    posted = client.post(
        "/admin/sessions_app/apikey/", {"action": "revoke", "_selected_action": [key.pk]}
    )

    key.refresh_from_db()
    assert key.revoked_at is None
    assert posted.status_code in (200, 302)
    assert listed.status_code == 200 and 'value="revoke"' not in listed.content.decode()


def test_tool_runs_are_listed_and_shown_on_the_session_page(admin_client):
    from tools_app.models import ToolExecution

    session = VoiceSessionFactory(status="ended")
    ConversationItemFactory(session=session, text="please list files")
    ToolExecution.objects.create(
        session=session,
        call_id="call_admin",
        tool="bash",
        arguments={"command": "ls"},
        status="succeeded",
        output="README.md",
    )

    listing = admin_client.get(
        "/admin/tools_app/toolexecution/", {"status__exact": "succeeded", "q": "call_admin"}
    )
    page = admin_client.get(_page(session))

    assert listing.context["cl"].result_count == 1
    html = page.content.decode()
    assert "please list files" in html and "call_admin" in html and "README.md" in html
