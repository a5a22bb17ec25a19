"""Django's own middleware, without two thread hops each on async requests.

Django runs a MiddlewareMixin's process_request and process_response through
sync_to_async in an async request: a hop to the request's thread and back for each.
These hooks only read headers and set attributes and headers, so here they run on the
event loop; the ones that may reach the database (saving a changed session, storing
messages) still go to a thread. Synchronous requests run them as Django does.
Security, CSRF and X-Frame-Options keep Django's names in MIDDLEWARE (check --deploy
looks for them): voiceplatform.handler loads the subclasses here in their place.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject, CSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage import default_storage
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware
from django.utils.functional import SimpleLazyObject, empty


class OnTheLoop:
    """For a MiddlewareMixin whose hooks do no I/O: call them directly when async."""

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            response = await self._process_response(request, response)
        return response

    async def _process_response(self, request: HttpRequest, response: HttpResponse):
        return self.process_response(request, response)


class ContentSecurityPolicy(OnTheLoop, CSPMiddleware):
    """django-csp builds both headers from the settings on every response, which costs
    more than the rest of this middleware. A response that carries no policy of its own
    (csp decorators) from a request that used no nonce gets the same text every time:
    that text is built once per settings. Any other goes django-csp's own way."""

    _PER_RESPONSE = tuple(
        f"_csp_{part}{suffix}"
        for part in ("config", "update", "replace", "exempt")
        for suffix in ("", "_ro")
    )
    _built: tuple[tuple, list[tuple[str, str, tuple[str, ...]]]] | None = None

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if (
            getattr(request, "_csp_nonce", None) is not None
            or any(hasattr(response, name) for name in self._PER_RESPONSE)
            or settings.DEBUG
        ):
            return super().process_response(request, response)
        for header, policy, excluded in self._policies():
            if header not in response and not request.path_info.startswith(excluded):
                response[header] = policy
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)
        return response

    def _policies(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(header, its text, path prefixes it skips) for each policy that is set."""
        config = tuple(
            getattr(settings, name, None)
            for name in ("CONTENT_SECURITY_POLICY", "CONTENT_SECURITY_POLICY_REPORT_ONLY")
        )
        built = type(self)._built
        if built is None or any(a is not b for a, b in zip(built[0], config, strict=True)):
            policies = []
            for header, report_only, policy in zip(
                (HEADER, HEADER_REPORT_ONLY), (False, True), config, strict=True
            ):
                text = build_policy(report_only=report_only)
                if text:
                    excluded = tuple((policy or {}).get("EXCLUDE_URL_PREFIXES") or ())
                    policies.append((header, text, excluded))
            built = type(self)._built = (config, policies)
        return built[1]


class Common(OnTheLoop, CommonMiddleware):
    pass


class Security(OnTheLoop, SecurityMiddleware):
    pass


class XFrameOptions(OnTheLoop, XFrameOptionsMiddleware):
    pass


class Csrf(OnTheLoop, CsrfViewMiddleware):
    """The token lives in a cookie: reading and setting it is header work. With
    CSRF_USE_SESSIONS it lives in the session (the database), so Django's own way."""

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if settings.CSRF_USE_SESSIONS:
            return await CsrfViewMiddleware.__acall__(self, request)
        return await super().__acall__(request)

    async def process_view(self, request, callback, callback_args, callback_kwargs):
        # The handler awaits a coroutine view hook as it is; a form's fields are
        # already in memory (the body was read before the view).
        check = super().process_view
        if settings.CSRF_USE_SESSIONS:
            return await sync_to_async(check)(request, callback, callback_args, callback_kwargs)
        return check(request, callback, callback_args, callback_kwargs)


class Authentication(OnTheLoop, AuthenticationMiddleware):
    """request.user and request.auser stay lazy: nothing is read until a view asks."""


class Messages(OnTheLoop, MessageMiddleware):
    """The message storage is made when first used (the API's requests never use it);
    storing messages may read the session (loading it from its store): only then on a
    thread; a request that neither read nor added any stores nothing."""

    def process_request(self, request: HttpRequest) -> None:
        request._messages = SimpleLazyObject(lambda: default_storage(request))

    async def _process_response(self, request: HttpRequest, response: HttpResponse):
        storage = getattr(request, "_messages", None)
        if isinstance(storage, SimpleLazyObject) and storage._wrapped is empty:
            return response  # never made: nothing to store
        if storage is not None and (storage.used or storage.added_new):
            return await sync_to_async(self.process_response)(request, response)
        return self.process_response(request, response)


class Session(OnTheLoop, SessionMiddleware):
    """The session is loaded lazily (by whoever reads it, on their thread); saving one
    that changed writes to the session store, so that goes to a thread."""

    async def _process_response(self, request: HttpRequest, response: HttpResponse):
        session = getattr(request, "session", None)
        if session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST):
            return await sync_to_async(self.process_response)(request, response)
        return self.process_response(request, response)
