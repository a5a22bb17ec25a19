"""The operations dashboard in a real Chromium against the live stack: an operator
switches maintenance on and off while a visitor sees the maintenance page come and go
and a call that was already live goes on."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from ops_app.models import AuditEvent, OpsState
from tests.e2e.test_browser_client import connect, open_page, say
from tools_app.models import Task

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "a long operator password"  # noqa: S105 (a test account)


async def sign_in(context, stack: str, username: str):
    page = await context.new_page()
    await page.goto(f"{stack}/admin/login/?next=/ops/")
    await page.fill("#id_username", username)
    await page.fill("#id_password", PASSWORD)
    # From here on, what goes wrong on /ops/ (the admin's login asks for a favicon).
    page.problems = []
    page.on("pageerror", lambda error: page.problems.append(f"page error: {error}"))
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    await page.click("input[type=submit]")
    await page.wait_for_url(f"{stack}/ops/")
    await page.wait_for_selector("#live-status:text-is('Live')")
    return page


async def test_an_operator_switches_maintenance_on_and_off_while_a_live_call_goes_on(
    contexts, stack, artifacts
):
    await sync_to_async(User.objects.create_superuser)("operator", password=PASSWORD)
    call = await open_page(await contexts(), stack)
    await connect(call)
    ops = await sign_in(await contexts(), stack, "operator")
    await ops.set_viewport_size({"width": 1360, "height": 900})
    # The call shows up live, pushed over /ws/ops/ (it may predate the page's render).
    await ops.wait_for_selector("#ops-sessions td:has-text('active')")

    await ops.fill("#id_message", "Upgrading the database")
    await ops.fill("#id_eta", "14:30 UTC")
    await ops.click("button:text-is('Switch maintenance on')")
    await ops.wait_for_selector(".notice:text-is('Maintenance is on.')")
    await ops.wait_for_selector("#ops-level .level-number:text-is('4')")
    await ops.screenshot(path=str(artifacts / "ops-maintenance-on.png"), full_page=True)
    visitor = await (await contexts()).new_page()
    closed = await visitor.goto(stack + "/")
    closed_text = await visitor.inner_text("main")
    replies = await call.locator("#transcript li.assistant:not(.partial)").count()
    await say(call, "are you still there")
    await call.wait_for_selector(
        "#transcript li.assistant:not(.partial):has-text('You said: are you still there')"
    )
    still_connected = await call.inner_text("#connection")

    await ops.click("button:text-is('Switch maintenance off')")
    await ops.wait_for_selector(".notice:text-is('Maintenance is off.')")
    await ops.wait_for_selector("#ops-audit li[data-action='maintenance_off']")
    reopened = await visitor.goto(stack + "/")
    await ops.screenshot(path=str(artifacts / "ops-maintenance-off.png"), full_page=True)
    audit = await ops.inner_text("#ops-audit")
    await call.click("#stop")
    # The ended call leaves the live list without a reload.
    await ops.wait_for_selector("#ops-sessions .empty", timeout=10_000)

    assert closed.status == 503
    assert "Upgrading the database" in closed_text and "14:30 UTC" in closed_text
    assert await call.locator("#transcript li.assistant:not(.partial)").count() > replies
    assert still_connected == "Connected"
    assert reopened.status == 200 and await visitor.is_visible("#start")
    assert "Maintenance On" in audit and "Maintenance Off" in audit
    switches = AuditEvent.objects.exclude(action=AuditEvent.Action.LOGIN).order_by("id")
    assert [e.action async for e in switches] == [
        "maintenance_on",
        "maintenance_off",
    ]
    assert not (await OpsState.objects.aget()).maintenance
    assert ops.problems == [] and call.problems == []


async def test_the_dashboard_fits_a_phone_and_works_from_the_keyboard(contexts, stack, artifacts):
    await sync_to_async(User.objects.create_superuser)("operator", password=PASSWORD)
    ops = await sign_in(await contexts(), stack, "operator")
    await ops.set_viewport_size({"width": 360, "height": 740})

    overflow = await ops.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    unlabelled = await ops.evaluate("""[...document.querySelectorAll(
            'main input:not([type=hidden]), main select, main textarea, main button')]
        .filter(el => !(el.labels && el.labels.length) && !el.textContent.trim()
                && !el.getAttribute('aria-label')).map(el => el.outerHTML)""")
    await ops.screenshot(path=str(artifacts / "ops-phone.png"), full_page=True)
    await ops.focus("#id_level")
    await ops.keyboard.press("Tab")  # hours
    await ops.keyboard.type("1")
    await ops.keyboard.press("Tab")  # reason
    await ops.keyboard.type("keyboard drill")
    await ops.keyboard.press("Tab")
    pressed = await ops.evaluate("document.activeElement.textContent")
    await ops.keyboard.press("Enter")
    await ops.wait_for_selector(".notice:text-is('Level 2 is forced.')")

    assert overflow <= 0
    assert unlabelled == []
    assert pressed.strip() == "Force this level"
    assert (await OpsState.objects.aget()).forced_level == 2
    assert ops.problems == []


async def test_an_operator_sees_a_running_task_and_cancels_it(contexts, stack, artifacts):
    await sync_to_async(User.objects.create_superuser)("task-operator", password=PASSWORD)
    call = await open_page(await contexts(), stack)
    await connect(call)
    await say(call, "run 'for i in $(seq 1 60); do echo ops-step-$i; sleep 1; done'")
    await call.wait_for_selector(".task-card .badge-running", timeout=30_000)
    ops = await sign_in(await contexts(), stack, "task-operator")
    await ops.set_viewport_size({"width": 1360, "height": 900})

    await ops.wait_for_selector("#ops-tasks tr[data-task] td:has-text('ops-step')")
    await ops.screenshot(path=str(artifacts / "ops-tasks-running.png"), full_page=True)
    await ops.click("#ops-tasks button:text-is('Cancel')")
    await ops.wait_for_selector(".notice:has-text('is being cancelled')")
    await call.wait_for_selector(".task-card .badge-cancelled", timeout=30_000)

    task = await Task.objects.order_by("-created_at").afirst()
    assert task.status == "cancelled" and task.cancelled_by == "task-operator"
    assert await AuditEvent.objects.filter(action="task_cancelled", target=task.pk).aexists()
    assert ops.problems == []
