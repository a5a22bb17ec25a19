"""Request metrics: django-prometheus's own, run without a thread hop per request, and
the seed's voice_api_request_duration_seconds{endpoint, method, status}.

Every label a caller can sway is one of a fixed set (method_label, view_label,
status_label): each new label value is a series kept in memory until the process ends,
and anyone can send a request with an invented method to an invented path."""

from __future__ import annotations

import time
from http import HTTPStatus

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django_prometheus.middleware import PrometheusAfterMiddleware, PrometheusBeforeMiddleware

from ops_app import ratelimit
from ops_app.metrics import count_error, voice_api_request_duration_seconds
from voiceplatform.api import client_ip, client_network
from voiceplatform.errors import TooManyRequests, render

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
KNOWN_STATUSES = frozenset(str(status.value) for status in HTTPStatus)
UNMATCHED = "unmatched"
OTHER = "other"


def method_label(request: HttpRequest) -> str:
    return request.method if request.method in KNOWN_METHODS else OTHER


def view_label(request: HttpRequest) -> str:
    """The resolved URL's name (or its view's dotted path: both come from our URLconf),
    or "unmatched" for a path no route takes."""
    match = getattr(request, "resolver_match", None)
    return match.view_name if match is not None else UNMATCHED


def status_label(response: HttpResponse) -> str:
    status = str(response.status_code)
    return status if status in KNOWN_STATUSES else OTHER


# Each metric's child per label values, as metric.labels() finds it (which validates
# and locks on every call, a dozen times a request). Bounded: every label value comes
# from a fixed set (above).
_children: dict[tuple, object] = {}


def _child(metric, labels: dict[str, str]):
    if not labels:
        return metric
    key = (metric, *labels.items())
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(**labels)
    return found


class _Native:
    """django-prometheus's hooks are plain CPU work: call them directly in async
    requests instead of through sync_to_async (a thread hop each)."""

    def __init__(self, get_response) -> None:
        super().__init__(get_response)
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        self.process_request(request)
        response = await self.get_response(request)
        return self.process_response(request, response)


class MetricsBeforeMiddleware(_Native, PrometheusBeforeMiddleware):
    pass


class MetricsAfterMiddleware(_Native, PrometheusAfterMiddleware):
    """Also times each request for the seed's latency histogram, labelled by route
    pattern (bounded), never by the raw path."""

    def label_metric(self, metric, request, response=None, **labels):
        # django-prometheus's hook for every labelled metric it updates: some of them
        # take the raw method, and "<unnamed view>" stands for any unrouted path.
        if "method" in labels:
            labels["method"] = method_label(request)
        if "view" in labels:
            labels["view"] = view_label(request)
        if "status" in labels and response is not None:
            labels["status"] = status_label(response)
        return _child(metric, labels)

    def process_request(self, request: HttpRequest) -> None:
        request.voice_started = time.perf_counter()
        if not (request.headers.get("Content-Length") or "0").isdigit():
            return  # the view answers 400; django-prometheus would raise on int()
        super().process_request(request)

    async def process_view(self, request, view_func, view_args, view_kwargs):
        return super().process_view(request, view_func, *view_args, **view_kwargs)

    async def process_exception(self, request, exception):
        return super().process_exception(request, exception)

    async def process_template_response(self, request, response):
        return super().process_template_response(request, response)

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        started = getattr(request, "voice_started", None)
        if started is not None:
            match = request.resolver_match
            endpoint = f"/{match.route}" if match is not None else UNMATCHED
            labels = {
                "endpoint": endpoint,
                "method": method_label(request),
                "status": status_label(response),
            }
            _child(voice_api_request_duration_seconds, labels).observe(
                time.perf_counter() - started
            )
            if response.status_code >= 500:
                count_error("api", f"http_{status_label(response)}")
        return super().process_response(request, response)


class RateLimitHeadersMiddleware:
    """X-RateLimit-Limit / -Remaining / -Reset on every response of a request that met
    a rate limit (the tightest one it met)."""

    async_capable = True
    sync_capable = False

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        token = ratelimit.current.set(None)
        try:
            response = await self.get_response(request)
            standing = ratelimit.current.get()
        finally:
            ratelimit.current.reset(token)
        if standing is not None:
            response["X-RateLimit-Limit"] = str(standing.limit)
            response["X-RateLimit-Remaining"] = str(standing.remaining)
            response["X-RateLimit-Reset"] = str(standing.reset_seconds)
        return response


class LoginRateLimitMiddleware:
    """Login attempts (POSTs to the admin's login, the door /ops/ uses too): at most
    LOGIN_RATE_PER_MINUTE per client address, an IPv6 one by its /64, as every
    per-address limit counts. Past it the answer is 429 before any password is read,
    so guesses with ever new usernames add neither axes rows nor audit events; the first
    refusal in each window is audited (ops_app.ratelimit)."""

    async_capable = True
    sync_capable = False
    VIEW_NAME = "admin:login"

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        return await self.get_response(request)

    async def process_view(self, request, view_func, view_args, view_kwargs):
        if request.method != "POST" or request.resolver_match.view_name != self.VIEW_NAME:
            return None
        network = client_network(client_ip(request)) or "unknown"
        try:
            await ratelimit.hit(f"login:{network}", settings.LOGIN_RATE_PER_MINUTE)
        except TooManyRequests as refused:
            return render(refused)
        return None
