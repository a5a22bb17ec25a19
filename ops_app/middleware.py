"""Request metrics: django-prometheus's own, run without a thread hop per request, and
the seed's voice_api_request_duration_seconds{endpoint, method, status}."""

from __future__ import annotations

import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from django_prometheus.middleware import PrometheusAfterMiddleware, PrometheusBeforeMiddleware

from ops_app.metrics import voice_api_request_duration_seconds

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


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
            endpoint = f"/{match.route}" if match is not None else "unmatched"
            method = request.method if request.method in KNOWN_METHODS else "other"
            voice_api_request_duration_seconds.labels(
                endpoint=endpoint, method=method, status=str(response.status_code)
            ).observe(time.perf_counter() - started)
        return super().process_response(request, response)
