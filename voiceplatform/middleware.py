"""Request context for logs, probes by any Host, and the one place API errors become
JSON."""

from __future__ import annotations

import random

import structlog
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse

from voiceplatform import dbpool
from voiceplatform.errors import ApiError, BadRequest, ServiceUnavailable, render

log = structlog.get_logger(__name__)


class RequestContextMiddleware:
    """Binds a request id (from X-Request-Id or fresh) to every log line of the request."""

    async_capable = True
    sync_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def _bind(self, request: HttpRequest) -> str:
        incoming = request.headers.get("X-Request-Id", "")
        # A log correlation id, not a secret: the process's PRNG, not a getrandom() call.
        request_id = incoming if 0 < len(incoming) <= 64 else f"{random.getrandbits(64):016x}"
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        return request_id

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        request_id = self._bind(request)
        response = self.get_response(request)
        response["X-Request-Id"] = request_id
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        request_id = self._bind(request)
        response = await self.get_response(request)
        response["X-Request-Id"] = request_id
        return response


# Read-only endpoints that kubelet probes, container health checks and Prometheus reach
# by a pod's address rather than by the public host name.
PROBE_PATHS = frozenset({"/health", "/health/live", "/health/ready", "/metrics"})


class ProbeHostMiddleware:
    """Lets probes and scrapes through whatever Host they send.

    The kubelet asks `10.1.2.3:8000`, a container health check `127.0.0.1:8000`,
    Prometheus the target's address: none of them is in ALLOWED_HOSTS, and Django would
    answer 400 (DisallowedHost). For GET and HEAD of PROBE_PATHS only, the Host is taken
    as sent: these views build no URL from it and set no cookie. Every other request
    still passes Django's Host check. Must come before anything that asks for the host
    (SecurityMiddleware, CommonMiddleware).
    """

    async_capable = True
    sync_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    @staticmethod
    def _accept_any_host(request: HttpRequest) -> None:
        if request.method in ("GET", "HEAD") and request.path_info in PROBE_PATHS:
            request.get_host = request._get_raw_host  # unvalidated, for this request only

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        self._accept_any_host(request)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        self._accept_any_host(request)
        return await self.get_response(request)


class RefuseNulMiddleware:
    """A URL with a NUL character in its path or query gets a 400, before any view.

    No real client sends one, and PostgreSQL can neither store nor compare one: every
    lookup that passes it on (an admin search or filter, an object id, a session file's
    name) would fail as a 500. Checked once here rather than in each of them.
    """

    async_capable = True
    sync_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    @staticmethod
    def _refusal(request: HttpRequest) -> HttpResponse | None:
        # A query string decodes to NUL only from "%00" (or a raw NUL byte).
        query = request.META.get("QUERY_STRING", "")
        if "\x00" in request.path or "%00" in query or "\x00" in query:
            return render(BadRequest("The URL may not contain NUL characters."))
        return None

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return self._refusal(request) or self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        return self._refusal(request) or await self.get_response(request)


class ApiErrorMiddleware:
    """Renders ApiError raised by a view as the JSON error shape."""

    async_capable = True
    sync_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception):
        if isinstance(exception, ApiError):
            if exception.status >= 500:
                log.warning("api_error", code=exception.code, status=exception.status)
            return render(exception)
        if isinstance(exception, OperationalError) and dbpool.exhausted(exception):
            log.warning("database_pool_busy", path=request.path)
            return render(dbpool.busy())
        if isinstance(exception, OperationalError | InterfaceError):
            # The database went away under a request the journal does not cover.
            log.warning("database_unreachable", path=request.path)
            return render(
                ServiceUnavailable("The database is unreachable; try again.", retry_after=5)
            )
        return None
