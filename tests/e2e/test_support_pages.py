"""Support staff in a real Chromium against the live stack: a conversation with a tool
call and a recording runs through the page; a Support user finds it in the admin by a
word that was said, reads it in order, plays the recording, and cannot see API keys."""

from __future__ import annotations

import asyncio

import pytest

from sessions_app.models import VoiceSession
from tests.support import end_call, say, start_call

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


async def _recorded_conversation_with_a_tool_call(browser, stack) -> VoiceSession:
    page = await browser.new_page()
    await page.goto(stack + "/")
    await page.check("#record")
    await start_call(page)
    await say(page, "please list files", "Here is what I found")
    await end_call(page)
    for _ in range(100):
        session = await VoiceSession.objects.order_by("-created_at").afirst()
        if session.recording:
            return session
        await asyncio.sleep(0.2)
    raise AssertionError("the recording was not uploaded")


async def test_support_finds_a_conversation_by_a_word_said_reads_it_and_plays_it(
    browser, support_page, stack, artifacts
):
    session = await _recorded_conversation_with_a_tool_call(browser, stack)
    page = support_page

    await page.fill("#searchbar", "files")
    await page.press("#searchbar", "Enter")
    await page.wait_for_selector("#result_list td.field-match mark")
    await page.set_viewport_size({"width": 1366, "height": 768})  # a laptop
    await page.screenshot(path=str(artifacts / "e2e-support-session-list.png"), full_page=True)
    found = await page.inner_text("#result_list tbody")
    await page.click("#result_list tbody tr:first-child th a")
    await page.wait_for_selector("#timeline")
    facts = await page.inner_text("#facts")
    entries = await page.eval_on_selector_all(
        "#timeline li", "items => items.map(item => [item.dataset.kind, item.innerText])"
    )
    await page.eval_on_selector(
        "#recording", "audio => { audio.muted = true; return audio.play(); }"
    )
    await page.wait_for_function(
        "() => { const a = document.querySelector('#recording'); "
        "return a.currentTime > 0 || a.ended; }",
        timeout=10_000,
    )
    # The recording (WebM without a length as written) shows its length and can seek.
    await page.wait_for_function(
        "() => Number.isFinite(document.querySelector('#recording').duration)", timeout=10_000
    )
    length = await page.inner_text("#recording-length")
    seekable = await page.eval_on_selector(
        "#recording", "a => { a.currentTime = a.duration / 2; return a.seekable.length > 0; }"
    )
    await page.screenshot(path=str(artifacts / "e2e-support-session-page.png"), full_page=True)
    fits = await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    problems_reading = list(page.problems)
    keys = await page.goto(f"{stack}/admin/sessions_app/apikey/")
    refusal = await page.inner_text("#content")

    assert "file" in found  # the best line, stemmed
    assert session.pk in facts

    def position(kind: str, words: str) -> int:
        return next(n for n, (k, text) in enumerate(entries) if k == kind and words in text)

    asked = position("user", "please list files")
    assert asked < position("tool", "bash") < position("assistant", "Here is what I found")
    assert fits
    assert keys.status == 403 and "not authorized to access this page" in refusal
    assert length.startswith("Length 0:") and seekable
    assert problems_reading == []
