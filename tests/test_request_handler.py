"""voiceplatform.handler: requests borrow a few long-lived threads, and Django's
Security, CSRF and X-Frame-Options hooks run on the event loop, doing what they did."""

from __future__ import annotations

import threading

import pytest
from asgiref.sync import SyncToAsync
from django.conf import settings
from django.core.signals import request_started

pytestmark = pytest.mark.django_db(transaction=True)

MOVED_HOOKS = ("SecurityMiddleware", "CsrfViewMiddleware", "XFrameOptionsMiddleware")


@pytest.fixture
def hops(monkeypatch):
    """The name of every function sent to a thread while the test runs."""
    seen: list[str] = []
    original = SyncToAsync.__call__

    async def counted(self, *args, **kwargs):
        seen.append(getattr(self.func, "__qualname__", type(self.func).__name__))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counted)
    return seen


async def test_requests_borrow_the_same_few_threads_instead_of_a_new_one_each(http):
    names: list[str] = []

    def note_thread(**kwargs):  # a sync receiver: Django runs it on the request's thread
        names.append(threading.current_thread().name)

    request_started.connect(note_thread)
    try:
        threads_before = threading.active_count()
        for _ in range(3 * settings.REQUEST_THREADS):
            assert (await http.get("/health/live")).status_code == 200
    finally:
        request_started.disconnect(note_thread)

    assert len(names) == 3 * settings.REQUEST_THREADS
    assert all(name.startswith("request-") for name in names), set(names)
    assert len(set(names)) <= settings.REQUEST_THREADS
    assert threading.active_count() <= threads_before + settings.REQUEST_THREADS


async def test_security_csrf_and_frame_options_hooks_send_nothing_to_a_thread(http, hops):
    response = await http.get("/health/live")

    assert response.status_code == 200
    assert not [name for name in hops if name.startswith(MOVED_HOOKS)], hops


async def test_the_moved_hooks_still_set_their_headers_and_refuse_a_form_without_a_token(
    http,
):
    page = await http.get("/admin/login/")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert "csrftoken" in page.cookies

    refused = await http.post("/admin/login/", data={"username": "a", "password": "b"})

    assert refused.status_code == 403
    assert b"CSRF" in refused.content


async def test_a_request_goes_to_the_thread_with_the_fewest_requests_in_flight(http):
    from voiceplatform.asgi import django_asgi_app as handler

    handler._load[:] = [5] * len(handler._load)
    handler._load[3] = 1
    names: list[str] = []

    def note_thread(**kwargs):
        names.append(threading.current_thread().name)

    request_started.connect(note_thread)
    try:
        await http.get("/health/live")
    finally:
        request_started.disconnect(note_thread)
        handler._load[:] = [0] * len(handler._load)

    assert names == ["request-3_0"]


async def test_the_content_security_policy_is_django_csps_own_and_follows_the_settings(
    http, settings
):
    from csp.utils import build_policy

    first = await http.get("/health/live")
    assert first.headers["Content-Security-Policy"] == build_policy()
    assert "Content-Security-Policy-Report-Only" not in first.headers

    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"default-src": ["'none'"]}}
    settings.CONTENT_SECURITY_POLICY_REPORT_ONLY = {
        "DIRECTIVES": {"default-src": ["'self'"]},
        "EXCLUDE_URL_PREFIXES": ["/health"],
    }
    changed = await http.get("/health/live")
    api = await http.get("/api/openapi.json")

    assert changed.headers["Content-Security-Policy"] == "default-src 'none'"
    assert "Content-Security-Policy-Report-Only" not in changed.headers  # excluded prefix
    assert api.headers["Content-Security-Policy-Report-Only"] == "default-src 'self'"


async def test_message_storage_is_made_only_for_a_request_that_uses_it(settings):
    from importlib import import_module

    from django.contrib import messages
    from django.http import HttpResponse
    from django.test import RequestFactory
    from django.utils.functional import empty

    from voiceplatform.inline_middleware import Messages

    def request(path: str):
        made = RequestFactory().get(path)
        made.session = import_module(settings.SESSION_ENGINE).SessionStore()
        return made

    async def adds_one(request):
        messages.info(request, "Saved.")
        return HttpResponse("ok")

    async def uses_none(request):
        return HttpResponse("ok")

    told = await Messages(adds_one)(request("/admin/"))
    assert "messages" in told.cookies  # the cookie storage kept it for the next page

    quiet_request = request("/session")
    quiet = await Messages(uses_none)(quiet_request)
    assert "messages" not in quiet.cookies
    assert quiet_request._messages._wrapped is empty  # never made
    assert list(messages.get_messages(quiet_request)) == []  # made when first asked for
