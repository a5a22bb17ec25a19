"""The whole stack for the browser: the run command (daphne, simulator in-process) on
PostgreSQL and Redis, a real Celery worker, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from tests.support import (
    CHROMIUM,
    FAKE_MEDIA,
    ROOT,
    database_env,
    free_port,
    launch,
    page_problems,
    sign_in,
    start_server,
    start_worker,
    stop_server,
    support_user,
    wait_for_worker,
)

SESSIONS = "/admin/sessions_app/voicesession/"

if not Path(CHROMIUM).exists():
    pytest.skip(
        "Debian's chromium is not installed (scripts/services.sh installs it)",
        allow_module_level=True,
    )


# The browser tests' package only: its worker must be gone before tests that need to
# know which workers answer (the deployment checklist's isolation check).
@pytest.fixture(scope="package")
def stack_logs(tmp_path_factory) -> Path:
    """Where the stack's processes write: server.log (the run command), worker.log."""
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="package")
def stack(django_db_setup, django_db_blocker, stack_logs):
    """(base URL) of a live server and a Celery worker on the test database."""
    port = free_port()
    with django_db_blocker.unblock():
        env = {
            **database_env(connection.settings_dict),
            # The stack's own worker (below) is the only one: the run command starts none.
            "RUN_WORKER": "0",
            "OPENAI_API_KEY": "",
            # The simulator the server mounts, for the worker too (agents, summaries).
            "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/simulator",
            # Ended calls are summarized, as in production (the test settings' server
            # would not).
            "SUMMARY_ENABLED": "1",
            "SIMULATOR_SPEECH_AFTER_SECONDS": "0.5",
            "CLIENT_STATS_INTERVAL_SECONDS": "1",
            # A typed command of a few seconds becomes a task (its card, its Stop).
            "TASK_DETACH_AFTER_SECONDS": "2",
            # Its own queue: other tests start workers of their own on the same Redis.
            "CELERY_TASK_DEFAULT_QUEUE": "e2e",
            "TOOL_WORKSPACE_ROOT": str(ROOT / "var" / "test-workspaces"),
        }
    logs = stack_logs
    server = start_server(
        ["bash", str(ROOT / "scripts/run.sh")],
        port,
        {**env, "PORT": str(port), "VAR_DIR": str(logs / "var")},
        logs / "server.log",
    )
    worker = start_worker(
        "e2e",
        logs / "worker.log",
        env=env,
        settings_module="voiceplatform.settings",
        concurrency=2,
    )
    wait_for_worker("e2e")
    yield f"http://127.0.0.1:{port}"
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    stop_server(server)


@pytest.fixture
async def playwright_driver():
    from playwright.async_api import async_playwright

    async with async_playwright() as driver:
        yield driver


@pytest.fixture
async def browser(playwright_driver):
    """A fresh Chromium (own profile) whose microphone is a fake device, allowed."""
    context = await launch(playwright_driver, *FAKE_MEDIA)
    yield context
    await context.close()
    shutil.rmtree(context.profile_dir, ignore_errors=True)


@pytest.fixture
async def contexts(playwright_driver):
    """Fresh Chromiums (own profiles, fake microphone), closed at the end."""
    opened = []

    async def open_one():
        context = await launch(playwright_driver, *FAKE_MEDIA)
        opened.append(context)
        return context

    yield open_one
    for context in opened:
        await context.close()
        shutil.rmtree(context.profile_dir, ignore_errors=True)


@pytest.fixture
async def staff_browser(playwright_driver):
    """A Chromium of its own for a staff member (no fake microphone needed)."""
    context = await launch(playwright_driver, "--autoplay-policy=no-user-gesture-required")
    yield context
    await context.close()
    shutil.rmtree(context.profile_dir, ignore_errors=True)


@pytest.fixture
async def support_page(staff_browser, stack):
    """A page of the staff browser, signed in as a Support user ("sam") on the session
    list; what goes wrong on it in page.problems."""
    await sync_to_async(support_user)("sam", "a long support password")
    page = await staff_browser.new_page()
    page.problems = page_problems(page)
    await sign_in(page, stack, "sam", "a long support password", SESSIONS)
    return page


@pytest.fixture
def artifacts() -> Path:
    path = ROOT / "artifacts"
    path.mkdir(exist_ok=True)
    return path
