"""A post-call summary in a real Chromium against the live stack: a caller has a
conversation with a tool call and thanks the assistant; within seconds of the end the
stack's worker has summarized it; a Support user finds it under the "Resolved"
outcome and reads the summary, outcome and topics above the conversation."""

from __future__ import annotations

import asyncio

import pytest

from sessions_app.models import VoiceSession
from tests.support import end_call, say, start_call

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LIST = "/admin/sessions_app/voicesession/"


async def _resolved_conversation(browser, stack) -> VoiceSession:
    page = await browser.new_page()
    await page.goto(stack + "/")
    await start_call(page)
    await say(page, "please list files", "Here is what I found")
    await say(page, "Thanks, that works", "You said: Thanks")
    await end_call(page)
    session = await VoiceSession.objects.order_by("-created_at").afirst()
    for _ in range(100):  # written by the stack's worker, within seconds of the end
        await session.arefresh_from_db()
        if session.summary_state not in ("", "pending"):
            return session
        await asyncio.sleep(0.2)
    raise AssertionError(f"no summary was written: {session.summary_state!r}")


async def test_support_reads_a_calls_summary_outcome_and_topics_above_it(
    browser, support_page, stack, artifacts
):
    session = await _resolved_conversation(browser, stack)
    page = support_page

    await page.click("#changelist-filter a[href='?outcome__exact=resolved']")
    await page.wait_for_url(f"{stack}{LIST}?outcome__exact=resolved")
    listed = await page.inner_text("#result_list tbody")
    await page.click("#result_list tbody tr:first-child th a")
    await page.wait_for_selector("#call-summary")
    await page.set_viewport_size({"width": 1366, "height": 768})  # a laptop
    screenshot = artifacts / "e2e-call-summary.png"
    await page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot of the session page with its summary: {screenshot}")
    after = (session.summarized_at - session.ended_at).total_seconds()
    print(f"the summary was written {after:.2f} s after the call ended")
    shown = await page.inner_text("#call-summary")
    summary_above = await page.evaluate(
        "document.querySelector('#call-summary').compareDocumentPosition("
        "document.querySelector('#timeline')) & Node.DOCUMENT_POSITION_FOLLOWING"
    )
    topics = await page.eval_on_selector_all(
        "#summary-topics li", "items => items.map(i => i.innerText)"
    )

    assert session.summary_state == "done", session.summary_note
    assert session.outcome == "resolved" and session.topics
    assert "Resolved" in listed
    assert "Resolved" in shown
    assert "The caller asked: “Hello, what can you do?”" in shown
    assert "You said: Thanks, that works" in shown  # the assistant's last answer
    assert topics == session.topics
    assert summary_above
    assert page.problems == []
