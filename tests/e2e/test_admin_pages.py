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


async def test_a_locked_out_sign_in_gets_a_page_saying_for_how_long_and_what_to_do(
    browser, stack, artifacts
):
    await sync_to_async(_admin)()
    page = await browser.new_page()
    await page.goto(f"{stack}/admin/login/")
    for attempt in range(5):
        await page.fill("#id_username", "admin")
        await page.fill("#id_password", f"wrong guess {attempt}")
        await page.click("input[type=submit]")
        await page.wait_for_load_state()

    said = await page.inner_text("#content-main")
    await page.screenshot(path=str(artifacts / "e2e-login-locked-out.png"), full_page=True)
    await page.keyboard.press("Tab")
    focused = await page.evaluate("document.activeElement.textContent")

    assert "Signing in as admin from this address is paused after 5 failed attempts" in said
    assert "Try again in 15 minutes" in said and "Axes › Access attempts" in said
    assert focused  # the page's links are reachable from the keyboard


async def test_staff_refused_a_page_get_the_admins_refusal_page(browser, stack, artifacts):
    await sync_to_async(User.objects.create_user)("helpdesk", password=PASSWORD, is_staff=True)
    page = await browser.new_page()
    await sign_in(page, stack, "helpdesk", PASSWORD, "/admin/")

    refused = await page.goto(f"{stack}/admin/sessions_app/apikey/")
    said = await page.inner_text("#content")
    await page.screenshot(path=str(artifacts / "e2e-admin-refused.png"), full_page=True)
    await page.click("text=Back to the admin's home")

    assert refused.status == 403
    assert "You are authenticated as helpdesk, but are not authorized" in said
    assert page.url == f"{stack}/admin/"
