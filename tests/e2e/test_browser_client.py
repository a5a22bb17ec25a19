"""The browser client, in a real headless Chromium, against the live stack: WebRTC to the
simulator, tools through a real Celery worker, and what the user sees when things fail."""

from __future__ import annotations

import asyncio
import json
import re
import statistics

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.test import AsyncClient
from django.urls import reverse

from ops_app import actions as ops_actions
from ops_app import breakers
from sessions_app.models import VoiceSession
from tests.support import launch, sign_in
from tools_app.models import ToolExecution

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SIM_KEY = {"Authorization": "Bearer sk-sim-local"}
PASSWORD = "a long password of ada's"  # noqa: S105 (a test account)
# The time as the browser's locale writes it (en-US here: "02:05 PM").
SEPARATOR = re.compile(r"^(New conversation|Reconnected) · \d{1,2}:\d{2}( [AP]M)?$")


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


async def hang_up(stack, call_id: str) -> None:
    """The far end goes away, as when the upstream drops the call."""
    async with httpx.AsyncClient(base_url=stack, headers=SIM_KEY) as http:
        await http.post(f"/simulator/v1/realtime/calls/{call_id}/hangup")


async def transcript_of(page) -> list[tuple[str, str]]:
    """(kind, text) of each line of the transcript (what was said), separators included."""
    rows = await page.eval_on_selector_all(
        "#transcript li",
        "items => items.map(item => [item.className,"
        " (item.querySelector('.text') || item).textContent])",
    )
    return [(kind, " ".join(text.split())) for kind, text in rows]


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


async def test_a_dropped_call_reconnects_by_itself_and_keeps_its_lines(browser, stack, artifacts):
    page = await open_page(browser, stack)
    await connect(page)
    await page.wait_for_selector("#transcript li.assistant:not(.partial)")
    first = await latest_session()

    await hang_up(stack, first.call_id)
    await page.wait_for_selector(
        "#connection:text-is('Reconnecting… (attempt 1 of 3)')", timeout=15_000
    )
    focused = await page.evaluate("document.activeElement.id")
    await page.screenshot(path=str(artifacts / "e2e-reconnecting.png"), full_page=True)
    await page.wait_for_selector("#connection:text-is('Connected')", timeout=15_000)
    await page.wait_for_selector("#transcript li.assistant:not(.partial) >> nth=1")
    await page.screenshot(path=str(artifacts / "e2e-reconnected.png"), full_page=True)

    second = await latest_session()
    await first.arefresh_from_db()
    lines = await transcript_of(page)
    kinds = [kind.split()[0] for kind, _ in lines]
    assert focused == "reconnect-cancel"
    assert second.pk != first.pk and second.status == "active"
    # Anonymous sessions have no owner to resume them: a fresh one (a signed-in caller's
    # resumes, below).
    assert second.resumed_from_id is None
    assert first.status == "ended"
    assert kinds.index("call-start") == 0 and "assistant" in kinds[: kinds.index("call-start", 1)]
    assert lines[kinds.index("call-start", 1)][1].startswith("Reconnected · ")
    assert await page.is_hidden("#reconnect-cancel") and await page.is_hidden("#reconnect")
    assert await page.is_hidden("#message")
    assert page.problems == []


async def test_a_signed_in_callers_dropped_call_comes_back_as_its_continuation(browser, stack):
    await sync_to_async(User.objects.create_user)("ada", password=PASSWORD, is_staff=True)
    page = await browser.new_page()
    await sign_in(page, stack, "ada", PASSWORD, "/")
    await connect(page)
    await page.wait_for_selector("#transcript li.assistant:not(.partial)")
    await say(page, "My locker code is blue door")
    await page.wait_for_selector("#transcript li.assistant:has-text('blue door')")
    first = await latest_session()

    await hang_up(stack, first.call_id)
    await page.wait_for_selector("#connection:text-is('Reconnecting… (attempt 1 of 3)')")
    await page.wait_for_selector("#connection:text-is('Connected')", timeout=15_000)
    await say(page, "What do you remember?")
    answer = page.locator("#transcript li.assistant:not(.partial)", has_text="earlier conversation")
    await answer.wait_for(timeout=15_000)

    second = await latest_session()
    assert second.resumed_from_id == first.pk
    assert "My locker code is blue door" in await answer.inner_text()


async def test_reconnecting_can_be_cancelled_from_the_keyboard(browser, stack):
    page = await open_page(browser, stack)
    await connect(page)
    first = await latest_session()

    await hang_up(stack, first.call_id)
    await page.wait_for_selector("#connection:text-is('Reconnecting… (attempt 1 of 3)')")
    await page.keyboard.press("Enter")  # the focus is on Cancel
    await page.wait_for_selector("#reconnect:visible")
    await asyncio.sleep(2)  # past when the first attempt would have begun

    assert await page.evaluate("document.activeElement.id") == "reconnect"
    assert await page.inner_text("#connection") == "Connection lost"
    assert await message_of(page) == "Reconnecting was cancelled."
    assert await page.is_hidden("#reconnect-cancel")
    assert await VoiceSession.objects.acount() == 1  # no attempt was made


async def test_a_dropped_call_that_cannot_reconnect_offers_a_reconnect_with_a_fresh_session(
    browser, stack, artifacts
):
    page = await open_page(browser, stack)
    await connect(page)
    first = await latest_session()

    async with httpx.AsyncClient(base_url=stack, headers=SIM_KEY) as http:
        await http.post(f"/simulator/v1/realtime/calls/{first.call_id}/hangup")
        # Every attempt finds the upstream refusing new sessions.
        await http.post(
            "/simulator/_control/fault",
            json={"mode": "rate_limit", "retry_after_ms": 100, "operations": ["client_secrets"]},
        )
        try:
            await page.wait_for_selector(
                "#connection:text-is('Reconnecting… (attempt 3 of 3)')", timeout=20_000
            )
            await page.wait_for_selector("#reconnect:visible", timeout=20_000)
            message = await message_of(page)
            focused = await page.evaluate("document.activeElement.id")
            await page.screenshot(path=str(artifacts / "e2e-reconnect-gave-up.png"), full_page=True)
        finally:
            await http.post("/simulator/_control/fault", json={"mode": "off"})
            # The refusals opened the OpenAI breaker: the upstream is back, close it.
            await sync_to_async(breakers.reset)(breakers.openai())
    await page.keyboard.press("Enter")  # on Reconnect, which has the focus
    await page.wait_for_selector("#connection:text-is('Connected')", timeout=15_000)

    assert message.startswith(
        "The connection to the assistant was lost, and reconnecting did not work: "
        "The service is unavailable right now."
    )
    assert focused == "reconnect"
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


async def test_a_consented_recording_is_uploaded_when_the_call_ends(browser, stack, artifacts):
    page = await open_page(browser, stack)
    await page.check("#record")
    await connect(page)
    await page.wait_for_selector("#transcript li.assistant:not(.partial)")

    await page.click("#stop")
    await page.wait_for_selector("#connection:text-is('Conversation ended')")
    saved = await page.wait_for_selector(
        "#recording-status:text-is('The recording was uploaded and saved.')"
    )
    await page.screenshot(path=str(artifacts / "e2e-recording-saved.png"), full_page=True)
    session = await latest_session()

    assert session.recording.name.endswith(".webm")
    assert await saved.get_attribute("role") == "status"  # screen readers announce it
    assert await page.inner_text("#message") == ""


async def test_a_recording_that_could_not_be_uploaded_is_said_to_be_lost(browser, stack, artifacts):
    page = await open_page(browser, stack)

    async def unreachable(route):
        await route.abort()

    await page.route("**/recording", unreachable)
    await page.check("#record")
    await connect(page)
    await page.wait_for_selector("#transcript li.assistant:not(.partial)")

    await page.click("#stop")
    failed = await page.wait_for_selector("#recording-status.failed")
    await page.screenshot(path=str(artifacts / "e2e-recording-failed.png"), full_page=True)

    assert (await failed.inner_text()).startswith(
        "The recording was not saved: the server could not be reached"
    )
    assert not (await latest_session()).recording


async def test_each_call_starts_under_a_separator_and_earlier_lines_stay(browser, stack, artifacts):
    page = await open_page(browser, stack)
    await connect(page)
    await page.wait_for_selector("#transcript li.assistant:not(.partial)")
    await page.click("#stop")
    await page.wait_for_selector("#connection:text-is('Conversation ended')")

    await connect(page)
    await say(page, "this is the second call")
    await page.wait_for_selector(
        "#transcript li.assistant:not(.partial):has-text('this is the second call')"
    )
    await page.screenshot(path=str(artifacts / "e2e-second-call-separator.png"), full_page=True)
    lines = await transcript_of(page)

    separators = [i for i, (kind, _) in enumerate(lines) if kind == "call-start"]
    assert len(separators) == 2 and separators[0] == 0
    assert all(SEPARATOR.match(lines[i][1]) for i in separators)
    first_call, second_call = lines[1 : separators[1]], lines[separators[1] + 1 :]
    assert ("user", "Hello, what can you do?") in first_call
    assert any(kind == "assistant" for kind, _ in first_call)
    assert ("user", "this is the second call") in second_call


async def test_the_page_shows_who_is_speaking_with_a_level_for_each_side(browser, stack, artifacts):
    page = await open_page(browser, stack)
    await connect(page)
    levels = "#mic-level[role=meter], #assistant-level[role=meter]"
    # (Predicates as functions: the page's CSP refuses eval, which a bare expression needs.)
    meter = "() => Number(document.getElementById('{}').getAttribute('aria-valuenow'))"

    # The fake microphone beeps, and the scripted user's turn says speech started.
    await page.wait_for_selector("#speaking:text-is('You are speaking')")
    await page.wait_for_function(meter.format("mic-level") + " > 30")
    await page.screenshot(path=str(artifacts / "e2e-you-are-speaking.png"), full_page=True)
    await page.click("#mute")  # the beeps stop: the assistant is heard alone
    await page.wait_for_function(meter.format("mic-level") + " === 0")
    await page.wait_for_function(
        "() => !document.getElementById('speaking').textContent.includes('You')"
    )
    await say(page, "tell me something about the weather where you are today")
    await page.wait_for_selector("#speaking:text-is('Assistant is speaking')", timeout=15_000)
    await page.wait_for_function(meter.format("assistant-level") + " > 30")
    motion = """() => [document.getElementById('speaking').dataset.who,
        getComputedStyle(document.getElementById('speaking'), '::before').animationName,
        getComputedStyle(document.querySelector('#assistant-level .meter-bar'))
            .transitionDuration]"""
    moving = await page.evaluate(motion)
    await page.emulate_media(reduced_motion="reduce")
    still = await page.evaluate(motion)
    await page.screenshot(path=str(artifacts / "e2e-assistant-speaking.png"), full_page=True)
    await page.wait_for_function(meter.format("mic-level") + " === 0")
    await page.wait_for_selector("#speaking:text-is('')", timeout=15_000)  # silence

    assert await page.locator(levels).count() == 2
    for side in ("mic-level", "assistant-level"):
        label = await page.eval_on_selector(
            f"#{side}",
            "m => [m.getAttribute('aria-valuemin'), m.getAttribute('aria-valuemax'),"
            " document.getElementById(m.getAttribute('aria-labelledby')).textContent]",
        )
        assert label[:2] == ["0", "100"] and label[2]
    assert await page.get_attribute("#speaking", "aria-live") == "polite"
    assert moving == ["assistant", "pulse", "0.1s"]
    assert still == ["assistant", "none", "0s"]  # prefers-reduced-motion is respected
    assert page.problems == []


async def test_the_microphone_can_be_chosen_remembered_and_switched_during_a_call(
    browser, stack, artifacts
):
    page = await browser.new_page()
    # What the page asks of the browser: the microphones it opens, the tracks it swaps in.
    await page.add_init_script("""(() => {
        window.opened = []; window.swappedIn = [];
        const open = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
        navigator.mediaDevices.getUserMedia = async (constraints) => {
            const stream = await open(constraints);
            window.opened.push(stream.getAudioTracks()[0].label);
            return stream;
        };
        const replace = RTCRtpSender.prototype.replaceTrack;
        RTCRtpSender.prototype.replaceTrack = function (track) {
            window.swappedIn.push(track.label);
            return replace.call(this, track);
        };
    })()""")
    await page.goto(stack + "/")
    await page.wait_for_selector("#microphone option >> nth=2", state="attached")
    choices = await page.eval_on_selector_all("#microphone option", "os => os.map(o => o.text)")
    label = await page.eval_on_selector("#microphone", "s => s.labels[0].textContent")

    await page.select_option("#microphone", label="Fake Audio Input 1")
    await connect(page)
    await page.focus("#microphone")  # switched with the keyboard, as a select is
    await page.keyboard.press("ArrowDown")
    await page.wait_for_function("() => window.swappedIn.length === 1")
    await page.screenshot(path=str(artifacts / "e2e-microphone-switched.png"), full_page=True)
    connected = await page.inner_text("#connection")
    opened, swapped_in = await page.evaluate("[window.opened, window.swappedIn]")
    await page.click("#stop")
    await page.wait_for_selector("#connection:text-is('Conversation ended')")
    await page.reload()
    await page.wait_for_selector("#microphone option >> nth=2", state="attached")
    remembered = await page.eval_on_selector("#microphone", "s => s.selectedOptions[0].text")

    assert label == "Microphone"
    assert choices == ["System default", "Fake Audio Input 1", "Fake Audio Input 2"]
    assert opened == ["Fake Audio Input 1", "Fake Audio Input 2"]
    # The same connection sends the new microphone: its track was replaced.
    assert swapped_in == ["Fake Audio Input 2"] and connected == "Connected"
    assert remembered == "Fake Audio Input 2"


async def test_a_page_open_when_maintenance_began_shows_the_operators_words_and_eta(
    browser, stack, artifacts
):
    page = await open_page(browser, stack)
    async with httpx.AsyncClient(base_url=stack) as http:

        async def page_served() -> int:
            return (await http.get("/")).status_code

        await ops_actions.maintenance_on(
            actor="test", message="We are upgrading the database", eta="in 10 minutes"
        )
        try:
            # Every process sees the switch within 2 s.
            for _ in range(60):
                if await page_served() == 503:
                    break
                await asyncio.sleep(0.1)
            await page.click("#start")
            message = await message_of(page)
            await page.screenshot(
                path=str(artifacts / "e2e-maintenance-caller-page.png"), full_page=True
            )
            notice = await browser.new_page()
            await notice.goto(stack + "/")
            expected_back = await notice.inner_text("#maintenance-eta")
            await notice.screenshot(
                path=str(artifacts / "e2e-maintenance-page.png"), full_page=True
            )
        finally:
            await ops_actions.maintenance_off(actor="test")
            for _ in range(60):
                if await page_served() == 200:
                    break
                await asyncio.sleep(0.1)

    assert message == (
        "Service temporarily unavailable (maintenance): We are upgrading the database. "
        "Expected back: in 10 minutes."
    )
    assert expected_back == "Expected back: in 10 minutes."
    assert await page.is_enabled("#start")
    assert await VoiceSession.objects.acount() == 0


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
    unlabelled = await page.evaluate("""[...document.querySelectorAll('input, button, select')]
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
