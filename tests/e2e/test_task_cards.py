"""Background tasks on the page, in a real headless Chromium against the live stack: a
typed command that runs long becomes a card with its progress, Stop cancels it, and
the cards come through a reconnect of the live-event socket."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.e2e.test_browser_client import connect, latest_session, open_page, say
from tools_app.models import Task

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

STEPS = "run 'for i in 1 2 3 4 5 6; do echo step-$i; sleep 1; done'"
TICKS = "run 'for i in $(seq 1 120); do echo tick-$i; sleep 1; done'"
# What a card's first rendering showed, recorded as it is added to the page, and every
# badge each card showed.
RECORD_CARDS = """() => {
  window.firstSeen = [];
  window.badges = [];
  new MutationObserver((changes) => {
    for (const change of changes) {
      for (const card of change.addedNodes) {
        if (!card.classList || !card.classList.contains('task-card')) continue;
        window.firstSeen.push({
          summary: card.querySelector('.task-what').textContent,
          progress: card.querySelector('.task-progress').textContent,
        });
      }
    }
    for (const card of document.querySelectorAll('#tasks .task-card')) {
      window.badges.push(card.querySelector('.task-what').textContent + ' = '
        + card.querySelector('.badge').textContent);
    }
  }).observe(document.getElementById('tasks'), { childList: true, subtree: true });
}"""


def card(text: str) -> str:
    return f"#tasks li.task-card:has-text({text!r})"


async def text_of(page, selector: str) -> str:
    return await page.inner_text(selector)


async def wait_for_change(page, selector: str, before: str, timeout=15_000) -> str:
    element = await page.query_selector(selector)
    await page.wait_for_function(
        "([element, before]) => element.textContent !== before",
        arg=[element, before],
        timeout=timeout,
    )
    return await text_of(page, selector)


async def wait_for_task(**filters) -> Task:
    for _ in range(100):
        task = await Task.objects.filter(**filters).afirst()
        if task is not None:
            return task
        await asyncio.sleep(0.2)
    raise AssertionError(f"no task {filters}")


async def test_a_long_command_is_a_card_with_progress_and_stop_cancels_another(
    browser, stack, artifacts
):
    page = await open_page(browser, stack)
    await connect(page)
    await page.evaluate(RECORD_CARDS)

    await say(page, STEPS)
    steps = card("step-$i")
    await page.wait_for_selector(f"{steps}[data-status='running']", timeout=20_000)
    await page.wait_for_selector(f"{steps} .task-progress:has-text('step-')")
    line = await text_of(page, f"{steps} .task-progress")
    elapsed = await text_of(page, f"{steps} .task-elapsed")
    later_line = await wait_for_change(page, f"{steps} .task-progress", line)
    later_elapsed = await wait_for_change(page, f"{steps} .task-elapsed", elapsed)
    await page.screenshot(path=str(artifacts / "task-cards-running.png"), full_page=True)
    await page.wait_for_selector(f"{steps}[data-status='succeeded']", timeout=20_000)
    result = await text_of(page, f"{steps} .task-result")
    first_seen = await page.evaluate("window.firstSeen")

    await say(page, TICKS)
    ticks = card("tick-$i")
    await page.wait_for_selector(f"{ticks} .task-progress:has-text('tick-')", timeout=20_000)
    await page.click(f"{ticks} button.task-stop")
    await page.wait_for_selector(f"{ticks}[data-status='cancelled']", timeout=20_000)
    await page.screenshot(path=str(artifacts / "task-cards.png"), full_page=True)
    await page.set_viewport_size({"width": 360, "height": 740})
    await page.locator("#tasks").scroll_into_view_if_needed()
    await page.screenshot(path=str(artifacts / "task-cards-phone.png"))
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )

    assert line.startswith("step-") and later_line.startswith("step-") and later_line != line
    assert ":" in elapsed and later_elapsed != elapsed
    assert "step-1" in result and "step-6" in result
    # The lines printed before the call became a task were on its card from the start.
    assert first_seen[0]["summary"].startswith("bash — for i in")
    assert first_seen[0]["progress"].startswith("step-")
    assert await page.inner_text(f"{steps} .badge") == "succeeded"
    assert await page.inner_text(f"{ticks} .badge") == "cancelled"
    assert not await page.is_visible(f"{ticks} button.task-stop")
    assert "stopped by caller" in await text_of(page, f"{ticks} .task-meta")
    badges = await page.evaluate("window.badges")
    assert any("tick-" in badge and badge.endswith("= stopping…") for badge in badges)
    assert overflow <= 0
    session = await latest_session()
    stopped = await Task.objects.aget(session=session, summary__contains="tick-")
    assert stopped.status == Task.Status.CANCELLED and stopped.cancelled_by == "caller"
    done = await Task.objects.aget(session=session, summary__contains="step-")
    assert done.status == Task.Status.SUCCEEDED
    assert page.problems == []


async def test_a_card_catches_up_after_the_live_socket_comes_back(browser, stack, artifacts):
    page = await open_page(browser, stack)
    sockets = []

    async def route(socket):
        sockets.append(socket)
        if len(sockets) == 1:
            socket.connect_to_server()
            return

        async def later():  # the page is back only once its task ended meanwhile
            await wait_for_task(summary__contains="step-", status=Task.Status.SUCCEEDED)
            socket.connect_to_server()

        asyncio.ensure_future(later())

    await page.route_web_socket("**/ws/sessions/**", route)
    await connect(page)
    await say(page, STEPS)
    steps = card("step-$i")
    await page.wait_for_selector(f"{steps}[data-status='running']", timeout=20_000)
    await page.wait_for_selector(f"{steps} .task-progress:has-text('step-')")

    await sockets[0].close(code=1011, reason="dropped")  # the page's side goes away
    await page.wait_for_selector(f"{steps}[data-status='succeeded']", timeout=30_000)
    await page.screenshot(path=str(artifacts / "task-cards-after-reconnect.png"), full_page=True)

    assert len(sockets) == 2
    assert "step-6" in await text_of(page, f"{steps} .task-result")
    assert await page.inner_text("#connection") == "Connected"
    assert page.problems == []


async def test_stop_on_a_task_that_ended_meanwhile_refreshes_its_card(browser, stack):
    page = await open_page(browser, stack)
    held = {"task_events": False}

    def route(socket):
        server = socket.connect_to_server()

        def to_page(message):  # while held, the page hears nothing of its tasks
            if held["task_events"] and json.loads(message)["type"].startswith("task."):
                return
            socket.send(message)

        server.on_message(to_page)

    await page.route_web_socket("**/ws/sessions/**", route)
    async with page.expect_response("**/session") as created:
        await connect(page)
    token = (await (await created.value).json())["session_token"]
    await say(page, TICKS)
    ticks = card("tick-$i")
    await page.wait_for_selector(f"{ticks} .task-progress:has-text('tick-')", timeout=20_000)
    session = await latest_session()
    task = await Task.objects.aget(session=session, summary__contains="tick-")

    held["task_events"] = True
    async with httpx.AsyncClient(base_url=stack) as http:
        answer = await http.post(
            f"/session/{session.pk}/tasks/{task.pk}/cancel",
            headers={"Authorization": f"Bearer {token}"},
        )
    await wait_for_task(pk=task.pk, status=Task.Status.CANCELLED)
    assert await page.get_attribute(ticks, "data-status") == "running"  # it missed that
    async with page.expect_response("**/cancel") as refused:
        await page.click(f"{ticks} button.task-stop")
    await page.wait_for_selector(f"{ticks}[data-status='cancelled']", timeout=15_000)

    assert answer.status_code == 202
    assert (await refused.value).status == 409
    assert await page.is_hidden("#message")
    # The browser logs the refused request itself; nothing else went wrong.
    assert [problem for problem in page.problems if "409 (Conflict)" not in problem] == []
