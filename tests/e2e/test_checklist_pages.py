"""The checklist pages in a real headless Chromium, served by daphne on the test
database: an operator logs in, starts a run, sees the automatic results and ticks an
item with a note, under the strict Content-Security-Policy."""

from __future__ import annotations

import sys

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from django.contrib.auth.models import Permission, User
from django.db import connection

from ops_app.models import AuditEvent, ChecklistEntry
from tests.support import (
    database_env,
    free_port,
    launch,
    load_checklists,
    start_server,
    stop_server,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _checklists(db):
    # Data from a migration: other transactional tests empty the tables.
    load_checklists()


PASSWORD = "a-long-test-password"  # noqa: S105 (a test user's)


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = {
        **database_env(connection.settings_dict),
        "DJANGO_SETTINGS_MODULE": "voiceplatform.settings",
        "CELERY_TASK_ALWAYS_EAGER": "1",
        "OPENAI_API_KEY": "",
        "PORT": str(port),
        "VAR_DIR": str(tmp_path / "var"),
    }
    process = start_server(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
        + ["voiceplatform.asgi:application"],
        port,
        env,
        tmp_path / "server.log",
    )
    yield f"http://127.0.0.1:{port}"
    stop_server(process)


def _operator() -> User:
    # Staff: the admin's login page, where operators log in, admits only staff. The
    # password hashed as the server hashes (the test settings use a faster hasher).
    user = User.objects.create(
        username="olivia",
        password=make_password(PASSWORD, hasher=PBKDF2PasswordHasher()),
        is_staff=True,
    )
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="ops_app", codename__in=["view_operations", "operate"]
        )
    )
    return user


async def test_an_operator_runs_a_checklist_in_the_browser(server, playwright_driver, artifacts):
    await sync_to_async(_operator)()
    browser = await launch(playwright_driver)
    page = await browser.new_page()
    problems = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def on_console(message) -> None:
        # The admin's login page has no icon of its own; its /favicon.ico 404 is not ours.
        if message.type == "error" and not message.location["url"].endswith("/favicon.ico"):
            problems.append(message.text)

    page.on("console", on_console)

    await page.goto(server + "/ops/checklists/")
    await page.fill("#id_username", "olivia")
    await page.fill("#id_password", PASSWORD)
    await page.click("input[type=submit]")
    await page.wait_for_url(server + "/ops/checklists/")
    start = "form[action='/ops/checklists/post-deployment-verification/start'] button"
    await page.click(start)
    await page.wait_for_url("**/ops/checklists/runs/*/", timeout=15_000)
    passed = await page.locator(".status.passed").count()
    entry = await ChecklistEntry.objects.aget(item__text="WebRTC connection succeeds")
    row = page.locator(f"#entry-{entry.pk}")
    await row.locator("input[name=done]").check()
    await row.locator("input[name=note]").fill("connected from the office browser")
    await row.locator("button").click()
    await page.wait_for_load_state()
    await page.screenshot(path=str(artifacts / "e2e-checklist-run.png"), full_page=True)
    after = await row.inner_text()
    await browser.close()

    assert passed >= 8  # every automatic check but the production settings
    assert "by olivia" in after
    ticked = await ChecklistEntry.objects.select_related("done_by").aget(pk=entry.pk)
    assert ticked.done and ticked.done_by.username == "olivia"
    assert ticked.note == "connected from the office browser"
    assert await AuditEvent.objects.filter(action="checklist_ticked").acount() == 1
    assert problems == []  # no script error, nothing the CSP refused
