"""Pages this stop added or changed outside /ops/, in a real Chromium against the live
stack: the API key shown once after it is made (never in a cookie), and the
maintenance page a visitor gets, with the operator's message and ETA."""

from __future__ import annotations

import shutil

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from ops_app import actions
from sessions_app.models import ApiKey
from tests.support import launch, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "a long administrator password"  # noqa: S105 (a test account)


@pytest.fixture
async def browser(playwright_driver):
    context = await launch(playwright_driver)
    yield context
    await context.close()
    shutil.rmtree(context.profile_dir, ignore_errors=True)


def _admin() -> User:
    return User.objects.create_superuser("admin", password=PASSWORD)


async def test_a_new_api_key_is_shown_once_on_its_page_and_never_in_a_cookie(
    browser, stack, artifacts
):
    await sync_to_async(_admin)()
    page = await browser.new_page()
    await sign_in(page, stack, "admin", PASSWORD, "/admin/sessions_app/apikey/add/")
    await page.fill("#id_name", "billing backend")
    await page.click("input[name=_save]")
    await page.wait_for_load_state()
    shown = await page.inner_text("body")
    await page.screenshot(path=str(artifacts / "e2e-api-key-issued.png"), full_page=True)
    cookies = await browser.cookies()
    await page.goto(f"{stack}/admin/sessions_app/apikey/")
    listed = await page.inner_text("body")

    key = await ApiKey.objects.aget(name="billing backend")
    raw = next(word for word in shown.split() if word.startswith(f"vpk_{key.lookup}_"))
    assert ApiKey.hash(raw) == key.key_hash
    assert shown.count(raw) == 1
    assert raw not in listed
    assert all(raw not in cookie["value"] for cookie in cookies)


async def test_a_visitor_in_maintenance_sees_the_message_and_the_eta(browser, stack, artifacts):
    await actions.maintenance_on(
        actor="e2e", message="Moving to a bigger database.", eta="16:45 UTC"
    )
    try:
        page = await browser.new_page()
        response = await page.goto(stack)
        await page.wait_for_selector("#maintenance-eta")
        text = await page.inner_text("main")
        await page.screenshot(path=str(artifacts / "e2e-maintenance-page.png"), full_page=True)
    finally:
        await actions.maintenance_off(actor="e2e")

    assert response.status == 503
    assert "Service temporarily unavailable" in text
    assert "Moving to a bigger database." in text and "16:45 UTC" in text
