"""The browser client, in a real headless Chromium, against the live stack: WebRTC to the
simulator, tools through a real Celery worker, and what the user sees when things fail."""

from __future__ import annotations

import asyncio
import json
import statistics

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.test import AsyncClient
from django.urls import reverse

from ops_app import breakers
from sessions_app.models import VoiceSession
from tests.support import launch
from tools_app.models import ToolExecution

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SIM_KEY = {"Authorization": "Bearer sk-sim-local"}


async def open_page(browser, stack):
    page = await browser.new_page()
    page.problems = []
    page.on("pageerror", lambda error: page.problems.append(f"page error: {error}"))
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.sockets = []
    page.on("websocket", lambda socket: page.sockets.append(socket.url))
    response = await page.goto(stack + "/")
    page.csp = response.headers.get("content-security-policy", "")
    return page


async def connect(page, timeout=15_000) -> float:
    await page.click("#start")
    await page.wait_for_selector("#connection:text-is('Connected')", timeout=timeout)
    return float(await page.get_attribute("#app", "data-connect-seconds"))


async def say(page, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")


async def message_of(page) -> str:
    return await (await page.wait_for_selector("#message:not([hidden])")).inner_text()


async def latest_session() -> VoiceSession:
    return await VoiceSession.objects.order_by("-created_at").afirst()


async def test_a_conversation_with_a_tool_call_from_start_to_end(browser, stack, artifacts):
    page = await open_page(browser, stack)

    await connect(page)
    # The fake microphone's sound is the scripted user's voice turn.
    await page.wait_for_selector(
        "#transcript li.user:not(.partial):has-text('Hello, what can you do?')"
    )
    await page.wait_for_selector(
        "#transcript li.assistant:not(.partial):has-text('I can talk with you')"
    )
    await say(page, "please list files")
    await page.wait_for_selector(
        "#tools li[data-status='succeeded']:has-text('bash')", timeout=20_000
    )
    await page.wait_for_selector(
        "#transcript li.assistant:has-text('Here is what I found')", timeout=20_000
    )
    await page.screenshot(path=str(artifacts / "e2e-mid-conversation.png"), full_page=True)
    time_left = await page.inner_text("#time-left")
    await page.click("#stop")
    await page.wait_for_selector("#connection:text-is('Conversation ended')")

    assert "script-src 'self'" in page.csp and "connect-src 'self'" in page.csp
    # The live events came over a socket whose URL carries no token.
    assert page.sockets and not any("token" in url for url in page.sockets)
    assert time_left.startswith(("14:", "15:")) and time_left.endswith("left")
    session = await latest_session()
    assert session.status == "ended" and session.end_reason == "client"
    assert 0 < session.duration_seconds < 60
    execution = await ToolExecution.objects.aget(session=session)
    assert execution.status == "succeeded" and execution.worker.startswith("e2e@")
    assert execution.origin == "sideband"
    texts = [text async for text in session.items.values_list("text", flat=True)]
    assert "please list files" in texts and "Hello, what can you do?" in texts
    staff = AsyncClient()
    await staff.aforce_login(
        await sync_to_async(User.objects.create_superuser)("support", password="x")
    )
    admin_page = await staff.get(
        reverse("admin:sessions_app_voicesession_change", args=[quote(session.pk)])
    )
    assert execution.call_id in admin_page.content.decode()
    assert page.problems == []


async def test_an_ordinary_call_logs_no_warning(browser, stack, stack_logs):
    server_log = stack_logs / "server.log"
    already = len(server_log.read_text().splitlines())
    page = await open_page(browser, stack)

    await connect(page)
    await page.wait_for_selector(
        "#transcript li.assistant:not(.partial):has-text('I can talk with you')"
    )
    await page.click("#stop")
    await page.wait_for_selector("#connection:text-is('Conversation ended')")
    session = await latest_session()

    # The server's JSON lines while the call lasted (daphne's access log is plain text).
    lines = [
        json.loads(line)
        for line in server_log.read_text().splitlines()[already:]
        if line.startswith("{")
    ]
    assert session.status == "ended"
    assert [line for line in lines if line["level"] not in ("debug", "info")] == []
    assert page.problems == []


async def test_time_from_start_to_connected(browser, stack, artifacts):
    page = await open_page(browser, stack)
    seconds = []
    for _ in range(5):
        seconds.append(await connect(page))
        await page.click("#stop")
        await page.wait_for_selector("#connection:text-is('Conversation ended')")

    median = statistics.median(seconds)
    (artifacts / "e2e-connect-seconds.json").write_text(
        json.dumps({"runs": seconds, "median": median})
    )
    print(f"\nstart -> connected: median {median:.3f} s over {seconds}")
    assert all(0 < value < 15 for value in seconds)


async def test_a_refused_microphone_is_explained(playwright_driver, stack):
    # No fake-UI flag: the permission prompt is denied, as a user clicking "Block".
    context = await launch(
        playwright_driver, "--use-fake-device-for-media-stream", "--deny-permission-prompts"
    )
    try:
        page = await open_page(context, stack)
        await page.click("#start")
        text = await message_of(page)
    finally:
        await context.close()

    assert "Microphone access was refused" in text
    assert await VoiceSession.objects.acount() == 0  # no session was wasted


async def test_an_upstream_error_event_is_shown_in_words(browser, stack):
    page = await open_page(browser, stack)
    await connect(page)

    await say(page, "please simulate error")
    message = await message_of(page)

    assert message == (
        "The assistant reported an error: The simulator was asked to fail this turn."
    )
    assert await page.inner_text("#connection") == "Connected"  # the call goes on


async def test_a_429_from_our_api_is_shown_with_its_retry_after(browser, stack):
    page = await open_page(browser, stack)
    async with httpx.AsyncClient(base_url=stack) as http:
        for _ in range(20):  # the per-IP limit, used up
            await http.post("/session", json={})

    await page.click("#start")
    message = await message_of(page)

    assert message.startswith("Too many requests.")
    assert "Try again in" in message and message.endswith("seconds.")
    assert await page.is_enabled("#start")


async def test_a_503_from_our_api_is_shown_with_its_retry_after(browser, stack):
    async with httpx.AsyncClient(base_url=stack, headers=SIM_KEY) as http:
        await http.post(
            "/simulator/_control/fault", json={"mode": "rate_limit", "retry_after_ms": 7000}
        )
        try:
            page = await open_page(browser, stack)
            await page.click("#start")
            message = await message_of(page)
        finally:
            await http.post("/simulator/_control/fault", json={"mode": "off"})

    assert message.startswith("The service is unavailable right now.")
    assert message.endswith("Try again in 7 seconds.")


async def test_a_dropped_connection_offers_a_reconnect_with_a_fresh_session(browser, stack):
    page = await open_page(browser, stack)
    await connect(page)
    first = await latest_session()

    # The far end goes away (as when the upstream drops the call).
    async with httpx.AsyncClient(base_url=stack, headers=SIM_KEY) as http:
        await http.post(f"/simulator/v1/realtime/calls/{first.call_id}/hangup")
    await page.wait_for_selector("#connection:text-is('Connection lost')", timeout=15_000)
    await page.wait_for_selector("#reconnect:visible")
    await page.click("#reconnect")
    await page.wait_for_selector("#connection:text-is('Connected')", timeout=15_000)

    second = await latest_session()
    assert second.pk != first.pk and second.status == "active"


async def test_with_tools_unavailable_the_page_says_so(browser, stack, settings):
    breaker = breakers.amplifier()
    for _ in range(settings.AMPLIFIER_BREAKER_FAILURES):
        await sync_to_async(breakers.record)(breaker, False)
    try:
        page = await open_page(browser, stack)
        await connect(page)
        banner = await page.inner_text("#banner")
    finally:
        await sync_to_async(breakers.reset)(breaker)

    assert "Tools are unavailable right now" in banner


async def test_push_to_talk_sends_a_turn_when_released(browser, stack):
    page = await open_page(browser, stack)
    await connect(page)
    await page.wait_for_selector("#transcript li.assistant:not(.partial)")  # the VAD turn

    await page.check("#ptt-mode")
    await page.hover("#talk")
    await page.mouse.down()
    await asyncio.sleep(0.3)
    await page.mouse.up()
    await page.wait_for_selector("#transcript li.assistant:not(.partial) >> nth=1")

    call_id = (await latest_session()).call_id
    async with httpx.AsyncClient(base_url=stack, headers=SIM_KEY) as http:
        received = (await http.get(f"/simulator/_control/calls/{call_id}")).json()[
            "events_received"
        ]
    update = [event for event in received if event["type"] == "session.update"][-1]
    assert update["session"]["audio"]["input"]["turn_detection"] is None
    assert [event["type"] for event in received][-3:] == [
        "input_audio_buffer.clear",
        "input_audio_buffer.commit",
        "response.create",
    ]


async def test_a_consented_recording_is_uploaded_when_the_call_ends(browser, stack):
    page = await open_page(browser, stack)
    await page.check("#record")
    await connect(page)
    await page.wait_for_selector("#transcript li.assistant:not(.partial)")

    await page.click("#stop")
    await page.wait_for_selector("#connection:text-is('Conversation ended')")
    for _ in range(50):
        session = await latest_session()
        if session.recording:
            break
        await asyncio.sleep(0.2)

    assert session.recording.name.endswith(".webm")
    assert await page.inner_text("#message") == ""


async def test_the_page_is_keyboard_operable_and_fits_a_phone(browser, stack):
    page = await open_page(browser, stack)
    await page.set_viewport_size({"width": 360, "height": 740})

    await page.keyboard.press("Tab")  # the first control is Start
    focused = await page.evaluate("document.activeElement.id")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#connection:text-is('Connected')", timeout=15_000)
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    unlabelled = await page.evaluate("""[...document.querySelectorAll('input, button')]
        .filter(el => !(el.labels && el.labels.length) && !el.textContent.trim()
                && !el.getAttribute('aria-label')).map(el => el.id)""")

    assert focused == "start"
    assert overflow <= 0
    assert unlabelled == []


async def test_closing_the_tab_ends_the_session(browser, stack):
    page = await open_page(browser, stack)
    await connect(page)
    session = await latest_session()

    await page.close(run_before_unload=True)
    for _ in range(50):
        await session.arefresh_from_db()
        if session.status != "active":
            break
        await asyncio.sleep(0.2)

    assert session.status == "ended" and session.end_reason == "client"


async def test_the_page_reports_audio_quality_while_connected(browser, stack):
    page = await open_page(browser, stack)
    await connect(page)
    session = await latest_session()

    for _ in range(50):  # the stack reports every second (10 s by default)
        await session.arefresh_from_db()
        if session.audio_stats.get("samples", 0) >= 2:
            break
        await asyncio.sleep(0.2)

    stats = session.audio_stats
    assert stats["samples"] >= 2
    assert 0 <= stats["rtt_seconds_avg"] < 1
    assert stats["packets_received"] > 0
