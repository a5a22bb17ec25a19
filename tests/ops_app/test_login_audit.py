"""Logins to the admin (the door /ops/ uses too): logins, logouts and failures are
recorded, never a password; five failures for a username from one address lock that
pair out for fifteen minutes, even with the right password, and that is recorded once."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.utils import timezone

from ops_app import actions as ops_actions
from ops_app import dashboard
from ops_app.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)

Action = AuditEvent.Action
PASSWORD = "right-horse-battery-7"  # noqa: S105


@pytest.fixture
async def staff():
    return await User.objects.acreate_user(
        "operator", password=PASSWORD, is_staff=True, is_superuser=True
    )


async def log_in(api, password: str, username: str = "operator", **headers):
    return await api.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password, "next": "/admin/"},
        headers=headers,
    )


async def actions() -> list[str]:
    return [e.action async for e in AuditEvent.objects.order_by("id")]


async def counted() -> Counter:
    # axes announces the lockout while handling the fifth failure, so that failure is
    # written just after the lockout it caused.
    return Counter(await actions())


async def test_a_login_and_a_logout_are_recorded(api, staff):
    logged_in = await log_in(api, PASSWORD)
    logged_out = await api.post("/admin/logout/")

    assert logged_in.status_code == 302 and logged_out.status_code == 200
    assert await actions() == [Action.LOGIN, Action.LOGOUT]
    login = await AuditEvent.objects.aget(action=Action.LOGIN)
    assert login.actor_id == staff.pk and login.actor_name == "operator"
    assert login.target == f"auth.user:{staff.pk} operator"
    assert login.ip == "127.0.0.1" and login.details == {"path": "/admin/login/"}


async def test_a_failed_login_is_recorded_with_the_username_tried_and_not_the_password(api, staff):
    response = await log_in(api, "guess-one-2")

    assert response.status_code == 200  # the form again, with its error
    [event] = [e async for e in AuditEvent.objects.all()]
    assert event.action == Action.LOGIN_FAILED
    assert event.actor is None and event.actor_name == "operator"
    assert event.ip == "127.0.0.1"
    assert event.details == {"username": "operator", "path": "/admin/login/"}
    assert "guess-one-2" not in str(event.details)


async def test_the_fifth_failure_locks_the_username_out_even_with_the_right_password(api, staff):
    statuses = [(await log_in(api, f"guess-{n}")).status_code for n in range(5)]
    right = await log_in(api, PASSWORD)
    admin_page = await api.get("/admin/")

    assert statuses == [200, 200, 200, 200, 429]
    assert right.status_code == 429
    assert admin_page.status_code == 302  # still not logged in
    assert await counted() == {Action.LOGIN_FAILED: 5, Action.LOCKED_OUT: 1}
    lockout = await AuditEvent.objects.aget(action=Action.LOCKED_OUT)
    assert lockout.actor_name == "operator" and lockout.ip == "127.0.0.1"
    assert lockout.details["failures"] == 5 and lockout.details["minutes"] == 15


async def test_the_lockout_page_says_who_for_how_long_and_what_to_do(api, staff, caplog):
    for n in range(5):
        await log_in(api, f"guess-{n}")

    page = await log_in(api, PASSWORD)

    html = page.content.decode()
    assert page.status_code == 429 and page["Retry-After"] == "900"
    assert page["Content-Type"].startswith("text/html") and '<body class=" login"' in html
    assert "as <strong>operator</strong> from this address is paused" in html
    assert "<strong>15 minutes</strong>" in html and "Axes › Access attempts" in html
    # The log says who was locked out and from where.
    lines = [r.getMessage() for r in caplog.records]
    locking = [line for line in lines if "Locking out" in line]
    assert locking and all("operator" in line and "127.0.0.1" in line for line in locking)


async def test_hammering_a_locked_out_login_adds_no_more_events(api, staff, settings):
    settings.LOGIN_RATE_PER_MINUTE = 100  # axes' refusals, not the rate limit's
    for n in range(5):
        await log_in(api, f"guess-{n}")

    refused = [(await log_in(api, f"more-{n}")).status_code for n in range(20)]

    assert set(refused) == {429}
    assert await counted() == {Action.LOGIN_FAILED: 5, Action.LOCKED_OUT: 1}


async def test_a_successful_login_starts_the_count_of_failures_afresh(api, staff):
    for n in range(4):
        await log_in(api, f"guess-{n}")
    await log_in(api, PASSWORD)
    await api.post("/admin/logout/")

    statuses = [(await log_in(api, f"again-{n}")).status_code for n in range(4)]

    assert statuses == [200] * 4  # not locked out: axes forgot the first four too
    assert (await counted())[Action.LOGIN_FAILED] == 8


async def test_the_lockout_is_for_that_username_from_that_address_only(api, staff, settings):
    settings.USE_X_FORWARDED_FOR = True
    for n in range(5):
        await log_in(api, f"guess-{n}", **{"X-Forwarded-For": "198.51.100.4"})

    elsewhere = await log_in(api, PASSWORD, **{"X-Forwarded-For": "198.51.100.99"})

    assert elsewhere.status_code == 302
    login = await AuditEvent.objects.aget(action=Action.LOGIN)
    assert login.ip == "198.51.100.99"


async def test_rotating_addresses_within_an_ipv6_64_does_not_dodge_the_lockout(
    api, staff, settings
):
    settings.USE_X_FORWARDED_FOR = True
    for n in range(5):
        await log_in(api, f"guess-{n}", **{"X-Forwarded-For": f"2001:db8:1:2::{n + 1}"})

    same_64 = await log_in(api, PASSWORD, **{"X-Forwarded-For": "2001:db8:1:2:ffff::9"})
    other_64 = await log_in(api, PASSWORD, **{"X-Forwarded-For": "2001:db8:1:3::1"})

    assert same_64.status_code == 429
    assert other_64.status_code == 302
    assert await counted() == {Action.LOGIN_FAILED: 5, Action.LOCKED_OUT: 1, Action.LOGIN: 1}


async def test_guessing_new_usernames_is_rate_limited_and_coalesced_in_the_audit(
    api, staff, settings
):
    settings.USE_X_FORWARDED_FOR = True
    settings.LOGIN_RATE_PER_MINUTE = 3
    await ops_actions.reset_breaker(actor=staff, name="amplifier")
    # One caller rotating through its IPv6 /64, a new username each time.
    statuses = [
        (
            await log_in(api, "guess", username=f"user{n}", **{"X-Forwarded-For": f"2001:db8::{n}"})
        ).status_code
        for n in range(1, 21)
    ]
    refused = await log_in(api, PASSWORD, **{"X-Forwarded-For": "2001:db8::ffff"})
    colleague = await log_in(api, PASSWORD, **{"X-Forwarded-For": "198.51.100.7"})

    # A run shorter than a minute meets at most two of the limit's windows.
    assert statuses.count(200) <= 2 * 3 and statuses.count(429) >= 20 - 2 * 3
    assert refused.status_code == 429 and "Retry-After" in refused
    assert refused.json()["error"]["code"] == "rate_limited"
    assert colleague.status_code == 302  # another address is not held up
    assert await AccessAttempt.objects.acount() <= 2 * 3
    events = await counted()
    assert events[Action.LOGIN_FAILED] <= settings.LOGIN_FAILURE_LIMIT
    assert 1 <= events[Action.RATE_LIMITED] <= 2
    recent = [event["action"] for event in (await dashboard.snapshot())["audit"]]
    assert Action.BREAKER_RESET in recent  # still on the dashboard's recent list


async def test_failures_from_one_address_are_recorded_up_to_the_limit_whatever_the_usernames(
    api, staff, settings
):
    settings.LOGIN_RATE_PER_MINUTE = 100
    statuses = [(await log_in(api, "guess", username=f"user{n}")).status_code for n in range(12)]

    assert statuses == [200] * 12
    assert await counted() == {Action.LOGIN_FAILED: settings.LOGIN_FAILURE_LIMIT}
    recorded = [e.actor_name async for e in AuditEvent.objects.order_by("id")]
    assert recorded == [f"user{n}" for n in range(settings.LOGIN_FAILURE_LIMIT)]


async def test_the_lockout_ends_after_fifteen_quiet_minutes(api, staff):
    for n in range(5):
        await log_in(api, f"guess-{n}")

    await AccessAttempt.objects.aupdate(attempt_time=timezone.now() - timedelta(minutes=16))
    response = await log_in(api, PASSWORD)

    assert response.status_code == 302


def test_lifting_a_lockout_in_the_admin_is_recorded(admin_client):
    attempt = AccessAttempt.objects.create(
        username="operator",
        ip_address="127.0.0.1",
        user_agent="",
        failures_since_start=5,
        attempt_time=timezone.now(),
        get_data="",
        post_data="",
        http_accept="",
        path_info="/admin/login/",
    )

    admin_client.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})

    assert not AccessAttempt.objects.exists()
    deleted = AuditEvent.objects.get(action=Action.ADMIN_DELETE)
    assert deleted.target.startswith(f"axes.accessattempt:{attempt.pk} ")
