"""A call's live view in a real Chromium beside the caller's page: staff watch each
turn and tool call arrive as the caller sees them, then an operator ends the call from
/ops/ and the caller's page says so."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from ops_app.models import AuditEvent
from sessions_app.models import VoiceSession
from tests.e2e.test_browser_client import connect, latest_session, open_page, say
from tests.e2e.test_ops_dashboard import PASSWORD, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


async def _seen_by_both(call, live, caller_selector: str, live_selector: str) -> float:
    """Waits until the caller's page and the live view both show something; how many
    seconds the live view came after the caller's page (negative: before)."""

    async def seen(page, selector) -> float:
        await page.wait_for_selector(selector, timeout=30_000)
        return time.monotonic()

    at_caller, at_live = await asyncio.gather(
        seen(call, caller_selector), seen(live, live_selector)
    )
    return at_live - at_caller


async def test_staff_watch_a_call_live_and_an_operator_ends_it(contexts, stack, artifacts):
    await sync_to_async(User.objects.create_superuser)("watcher", password=PASSWORD)
    call = await open_page(await contexts(), stack)
    await connect(call)
    session = await latest_session()
    failed = {"ops": [], "call": []}
    ops_context = await contexts()
    ops_context.on(
        "response", lambda r: r.status >= 400 and failed["ops"].append((r.status, r.url))
    )
    ops = await sign_in(ops_context, stack, "watcher")
    call.on("response", lambda r: r.status >= 400 and failed["call"].append((r.status, r.url)))
    await ops.set_viewport_size({"width": 1360, "height": 900})
    await ops.click(f"a[aria-label='Watch session {session.pk} live']")
    await ops.wait_for_url(f"{stack}/ops/sessions/{session.pk}/live")
    await ops.wait_for_selector("#live-status:text-is('Live')")
    lags = {}

    lags["spoken turn"] = await _seen_by_both(
        call,
        ops,
        "#transcript li.user:not(.partial):has-text('Hello, what can you do?')",
        "#timeline li.user:has-text('Hello, what can you do?')",
    )
    lags["spoken reply"] = await _seen_by_both(
        call,
        ops,
        "#transcript li.assistant:not(.partial):has-text('I can talk with you')",
        "#timeline li.assistant:has-text('I can talk with you')",
    )
    await say(call, "please list files")
    lags["typed turn"] = await _seen_by_both(
        call,
        ops,
        "#transcript li.user:has-text('please list files')",
        "#timeline li.user:has-text('please list files')",
    )
    lags["tool call"] = await _seen_by_both(
        call,
        ops,
        "#tools li[data-status='succeeded']:has-text('bash')",
        "#timeline li.tool:has-text('bash'):has-text('succeeded')",
    )
    await ops.wait_for_selector("#timeline li.assistant:has-text('Here is what I found')")
    await ops.screenshot(path=str(artifacts / "ops-live-call.png"), full_page=True)
    (artifacts / "ops-live-call-lag.json").write_text(json.dumps(lags, indent=2))
    print("live view after the caller's page, seconds:", lags)

    dashboard = await ops.context.new_page()
    await dashboard.goto(f"{stack}/ops/")
    await dashboard.fill(
        f"#ops-sessions tr:has-text('{session.pk}') input[name=reason]", "e2e: ended by staff"
    )
    await dashboard.click(f"button[aria-label='End session {session.pk}']")
    await dashboard.wait_for_selector(f".notice:has-text('The call {session.pk} was ended')")
    await call.wait_for_selector("#connection:text-is('Conversation ended')", timeout=20_000)
    caller_message = await call.inner_text("#message")
    await ops.wait_for_selector("#live-status:has-text('The call has ended')", timeout=10_000)
    await ops.wait_for_selector("#timeline li.event:has-text('Ended: Staff')")
    await ops.screenshot(path=str(artifacts / "ops-live-call-ended.png"), full_page=True)

    ended = await VoiceSession.objects.aget(pk=session.pk)
    assert (ended.status, ended.end_reason) == ("ended", "staff")
    assert "support team ended this conversation" in caller_message
    audit = await AuditEvent.objects.aget(action=AuditEvent.Action.CALL_ENDED)
    assert audit.actor_name == "watcher" and audit.details["reason"] == "e2e: ended by staff"
    assert set(lags) == {"spoken turn", "spoken reply", "typed turn", "tool call"}
    assert ops.problems == [] and failed["ops"] == [], failed
    # A relay of the page's events in flight when the server ended the session is
    # refused as too late (409); nothing else fails on the caller's page.
    relay = f"{stack}/session/{session.pk}/events"
    assert all(failure == (409, relay) for failure in failed["call"]), failed["call"]
    assert all("409" in problem for problem in call.problems), call.problems
