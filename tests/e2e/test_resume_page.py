"""Resume in a real Chromium against the live stack: a signed-in user has a conversation,
finds it under "Recent conversations", resumes it, and the assistant of the new call
knows what was said in the old one. Anonymous visitors see no list."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from sessions_app.models import VoiceSession
from tests.support import end_call, page_problems, say, sign_in, start_call

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "a long password of ada's"  # noqa: S105 (a test account)


async def test_a_signed_in_user_resumes_a_recent_conversation_from_the_page(
    browser, stack, artifacts
):
    # The page signs in through the admin's login form: a staff account without rights.
    await sync_to_async(User.objects.create_user)("ada", password=PASSWORD, is_staff=True)
    page = await browser.new_page()
    problems = page_problems(page)
    await page.goto(stack + "/")
    anonymous_sees_a_list = await page.locator("#recent").count()

    await sign_in(page, stack, "ada", PASSWORD, "/")
    await page.wait_for_selector("#recent-status:text-is('No earlier conversations yet.')")
    await start_call(page)
    await say(page, "My locker code is blue door", "blue door")
    await end_call(page)
    earlier = await VoiceSession.objects.order_by("-created_at").afirst()
    row = page.locator(f"#recent-list li[data-session-id='{earlier.pk}']")
    await row.wait_for()
    title = await row.locator(".title").inner_text()

    await row.get_by_role("button", name="Resume").click()
    await page.wait_for_selector("#connection:text-is('Connected')", timeout=15_000)
    await page.fill("#text", "What do you remember?")
    await page.press("#text", "Enter")
    answer = page.locator("#transcript li.assistant:not(.partial)", has_text="earlier conversation")
    await answer.wait_for(timeout=15_000)
    await page.screenshot(path=str(artifacts / "e2e-resume.png"), full_page=True)
    remembered = await answer.inner_text()
    await page.click("#stop")
    await page.wait_for_selector("#connection:text-is('Conversation ended')")
    await page.wait_for_selector(
        f"#recent-list li:first-child:not([data-session-id='{earlier.pk}'])"
    )

    assert anonymous_sees_a_list == 0
    assert title == "Hello, what can you do?"  # the scripted voice turn came first
    assert "My locker code is blue door" in remembered
    resumed = await VoiceSession.objects.order_by("-created_at").afirst()
    assert resumed.resumed_from_id == earlier.pk and resumed.user_id == earlier.user_id
    assert resumed.status == "ended"
    assert await page.locator("#recent-list li").count() == 2
    assert problems == []
