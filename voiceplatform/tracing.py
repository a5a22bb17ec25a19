"""Traces, on OpenTelemetry: one trace from a request through Celery into the tool run.

Set up once per process, and only when an OTLP endpoint is configured
(`OTEL_EXPORTER_OTLP_ENDPOINT`, settings.TRACING_ENABLED): web processes in
voiceplatform.asgi, Celery workers in each pool process (voiceplatform.celery). Without
it nothing is set up at all: no SDK is imported, no library is instrumented, the HTTP
app is not wrapped, and span() hands back one shared object that does nothing.

When on, spans come from OpenTelemetry's maintained instrumentations and from ours:

- every HTTP request (the ASGI instrumentation around the HTTP app; named by its Django
  route, `POST /tools/<str:name>`; the health probes and `/metrics` left out unless
  `OTEL_PYTHON_ASGI_EXCLUDED_URLS` says otherwise);
- Celery's publish and run: the trace travels in the task message's headers, so a tool
  call queued to a worker (a shared queue, a worker's own, a forward between workers)
  goes on in the same trace; an in-process (eager) task runs inside its caller's span;
- httpx and httpx2 (the upstream, the web tools), psycopg (Django's queries), Redis
  (sync and asyncio);
- ours (span()): a tool call at either door, its run in the worker, the sandbox's
  spawn, an agent's run, steps, model calls and tool calls; with `voice.session_id`,
  `voice.call_id` and `voice.tool_name`.

A client call (Redis, PostgreSQL, HTTP) outside any span starts no trace: lease renewals
and the channel layer's polling would otherwise be thousands of one-span traces. The
standard OTEL_* variables (headers, sampler, resource attributes, batching, service
name: `voiceplatform-web` / `voiceplatform-worker` by default) are read by the SDK and
exporters themselves.

Tests trace into an exporter of their own (install_for_tests, then uninstall).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from django.conf import settings

WEB = "voiceplatform-web"
WORKER = "voiceplatform-worker"
# Not traced unless OTEL_PYTHON_ASGI_EXCLUDED_URLS / OTEL_PYTHON_EXCLUDED_URLS say
# otherwise (regular expressions searched in the URL): probes and scrapes, every few
# seconds from every prober.
DEFAULT_EXCLUDED_URLS = "/health,/metrics"

_lock = threading.Lock()
_provider: Any = None  # the SDK's TracerProvider, once set up
_tracer: Any = None  # ours, from it
_instrumentors: list[Any] = []


class _NoSpan:
    """What span() yields while tracing is off: takes attributes and drops them."""

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass


_OFF = contextlib.nullcontext(_NoSpan())


def enabled() -> bool:
    return _provider is not None


def describe() -> str:
    """For the start-up line: where traces go, or off."""
    if not settings.TRACING_ENABLED:
        return "off"
    return f"otlp {settings.OTEL_TRACES_PROTOCOL} {settings.OTEL_TRACES_ENDPOINT}"


def setup(service: str) -> bool:
    """Traces this process from now on, exported over OTLP, when an endpoint is
    configured; does nothing otherwise, or when already done. service is the service
    name unless OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) gives one."""
    if not settings.TRACING_ENABLED:
        return False
    return _install(_otlp_exporter, service, batch=True, make_global=True)


def install_for_tests(exporter: Any, service: str = WEB) -> Any:
    """The test hook: traces this process into exporter (e.g. the SDK's
    InMemorySpanExporter), each span as it ends, without touching the global tracer
    provider. Returns the provider; uninstall() undoes it."""
    _install(lambda: exporter, service, batch=False, make_global=False)
    return _provider


def flush() -> None:
    """Sends what is still batched (a Celery pool process about to end: it leaves
    without running the interpreter's exit hooks, where the SDK would)."""
    if _provider is not None:
        _provider.force_flush()


def uninstall() -> None:
    """Stops tracing this process (tests): the libraries are left as they were."""
    global _provider, _tracer
    with _lock:
        for instrumentor in reversed(_instrumentors):
            instrumentor.uninstrument()
        _instrumentors.clear()
        if _provider is not None:
            _provider.shutdown()
        _provider = _tracer = None


def _install(exporter, service: str, *, batch: bool, make_global: bool) -> bool:
    global _provider, _tracer
    with _lock:
        if _provider is not None:
            return True
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        provider = TracerProvider(resource=_resource(service))
        # The sampler the OTEL_TRACES_SAMPLER variables chose, less orphan client calls
        # (read by each tracer as it is made: none is made yet).
        provider.sampler = _without_orphan_client_spans(provider.sampler)
        processor = BatchSpanProcessor if batch else SimpleSpanProcessor
        provider.add_span_processor(processor(exporter()))
        if make_global:
            trace.set_tracer_provider(provider)
        _instrument_libraries(provider)
        _provider = provider
        _tracer = provider.get_tracer("voiceplatform")
        return True


def _resource(service: str):
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    detected = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        return Resource.create({SERVICE_NAME: service})
    return detected


def _otlp_exporter():
    """The OTLP span exporter for OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL; it reads the
    endpoint, headers, timeout, compression and certificates from the environment."""
    if settings.OTEL_TRACES_PROTOCOL == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


def _without_orphan_client_spans(configured):
    from opentelemetry import trace
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class WithoutOrphanClientSpans(Sampler):
        """configured's decision, except that a client call with no span around it
        starts no trace."""

        def should_sample(self, parent_context, trace_id, name, kind=None, *args, **kwargs):
            parent = trace.get_current_span(parent_context).get_span_context()
            if kind == trace.SpanKind.CLIENT and not parent.is_valid:
                return SamplingResult(Decision.DROP)
            return configured.should_sample(parent_context, trace_id, name, kind, *args, **kwargs)

        def get_description(self) -> str:
            return f"WithoutOrphanClientSpans{{{configured.get_description()}}}"

    return WithoutOrphanClientSpans()


def _instrument_libraries(provider) -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import (
        HTTPX2ClientInstrumentor,
        HTTPXClientInstrumentor,
    )
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    for instrumentor in (
        CeleryInstrumentor(),
        HTTPXClientInstrumentor(),
        HTTPX2ClientInstrumentor(),
        PsycopgInstrumentor(),
        RedisInstrumentor(),
    ):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)
            _instrumentors.append(instrumentor)


def traced_http(app):
    """The HTTP ASGI app with a span per request (the incoming `traceparent` is
    continued); app itself while tracing is off."""
    if _provider is None:
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.util.http import get_excluded_urls, parse_excluded_urls

    if {"OTEL_PYTHON_ASGI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"} & set(os.environ):
        excluded = get_excluded_urls("ASGI")
    else:
        excluded = parse_excluded_urls(DEFAULT_EXCLUDED_URLS)
    return OpenTelemetryMiddleware(
        app,
        excluded_urls=excluded,
        default_span_details=_request_span_details,
        tracer_provider=_provider,
        # One span per request, not one more per body chunk sent or received.
        exclude_spans=["receive", "send"],
    )


def _request_span_details(scope: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """A request span's name by its route, never its path (ids would make every
    name new): `POST /tools/<str:name>`; the method alone for a path with no route."""
    from django.urls import Resolver404, resolve
    from opentelemetry.util.http import sanitize_method

    method = sanitize_method(str(scope.get("method") or "").strip()) or "HTTP"
    if method == "_OTHER":
        method = "HTTP"
    try:
        route = "/" + resolve(scope.get("path") or "/").route
    except Resolver404:
        return method, {}
    return f"{method} {route}", {"http.route": route}


def span(name: str, attributes: Mapping[str, Any] | None = None, *, new_trace: bool = False):
    """A context manager: a span of ours named name around its block, current within it
    (exceptions recorded), yielding it for more attributes; new_trace starts a trace of
    its own whatever is current. While tracing is off, a shared no-op."""
    if _tracer is None:
        return _OFF
    context = None
    if new_trace:
        from opentelemetry.context import Context

        context = Context()
    return _tracer.start_as_current_span(
        name, context=context, attributes=_attribute_values(attributes)
    )


def _attribute_values(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a span attribute may hold: str, bool, int or float; None left out."""
    values: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if value is None:
            continue
        # Exactly these types: a str enum (TextChoices) goes as its text.
        values[key] = value if type(value) in (str, bool, int, float) else str(value)
    return values


@contextlib.contextmanager
def outside_any_trace() -> Iterator[None]:
    """Tasks started in the block belong to no trace of the code starting them: for work
    that outlives its request (holding a call's sideband for minutes)."""
    if _tracer is None:
        yield
        return
    from opentelemetry import context

    token = context.attach(context.Context())
    try:
        yield
    finally:
        context.detach(token)


def tool_attributes(session_id: Any, call_id: Any, tool: Any, **more: Any) -> dict[str, Any]:
    """The attributes every span of ours about a tool call carries; more as
    `voice.tool_<key>`."""
    return {
        "voice.session_id": str(session_id),
        "voice.call_id": str(call_id)[:80] if call_id is not None else None,
        "voice.tool_name": str(tool)[:80] if tool is not None else None,
        **{f"voice.tool_{key}": value for key, value in more.items()},
    }
