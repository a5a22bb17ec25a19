"""The whole stack for the browser: the run command (daphne, simulator in-process) on
PostgreSQL and Redis, a real Celery worker, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import (
    ROOT,
    database_env,
    free_port,
    start_server,
    start_worker,
    stop_server,
    wait_for_worker,
)

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
FLAGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # Lets the page offer loopback ICE candidates, so WebRTC stays on 127.0.0.1.
    "--allow-loopback-in-peer-connection",
]
FAKE_MEDIA = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]

if not Path(CHROMIUM).exists():
    pytest.skip(
        "Debian's chromium is not installed (scripts/services.sh installs it)",
        allow_module_level=True,
    )


def _env(db: dict) -> dict[str, str]:
    return {
        **database_env(db),
        "OPENAI_API_KEY": "",
        "SIMULATOR_SPEECH_AFTER_SECONDS": "0.5",
        "CLIENT_STATS_INTERVAL_SECONDS": "1",
        # Its own queue: other tests start workers of their own on the same Redis.
        "CELERY_TASK_DEFAULT_QUEUE": "e2e",
        "TOOL_WORKSPACE_ROOT": str(ROOT / "var" / "test-workspaces"),
    }


@pytest.fixture(scope="session")
def stack(django_db_setup, django_db_blocker, tmp_path_factory):
    """(base URL) of a live server and a Celery worker on the test database."""
    with django_db_blocker.unblock():
        env = _env(connection.settings_dict)
    logs = tmp_path_factory.mktemp("stack")
    port = free_port()
    server = start_server(
        ["bash", str(ROOT / "scripts/run.sh")],
        port,
        {**env, "PORT": str(port), "VAR_DIR": str(logs / "var")},
        logs / "server.log",
    )
    worker = start_worker(
        "e2e",
        {**env, "DJANGO_SETTINGS_MODULE": "voiceplatform.settings"},
        logs / "worker.log",
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


async def launch(driver, *extra: str):
    profile = tempfile.mkdtemp(prefix="chromium-")
    context = await driver.chromium.launch_persistent_context(
        profile, executable_path=CHROMIUM, headless=True, args=[*FLAGS, *extra]
    )
    context.profile_dir = profile
    return context


@pytest.fixture
async def browser(playwright_driver):
    """A fresh Chromium (own profile) whose microphone is a fake device, allowed."""
    context = await launch(playwright_driver, *FAKE_MEDIA)
    yield context
    await context.close()
    shutil.rmtree(context.profile_dir, ignore_errors=True)


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
