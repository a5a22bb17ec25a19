"""Traces (voiceplatform.tracing): a tool call is one trace from the request through
Celery into the tool's sandbox, in-process and across a real worker; a process with an
OTLP endpoint exports its spans there; a process without one sets nothing up at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from sessions_app.probe import open_call
from tests.factories import bearer
from tests.support import (
    ROOT,
    OtlpReceiver,
    daphne,
    embedded_env,
    eventually,
    free_port,
    held,
    start_server,
    stop_server,
    worker_running,
)
from tools_app import policy
from tools_app.models import ToolExecution
from voiceplatform import tracing

pytestmark = pytest.mark.django_db(transaction=True)

REQUEST = "POST /tools/<str:name>"
PUBLISH = "apply_async/tools_app.tasks.execute_tool_task"
TASK = "run/tools_app.tasks.execute_tool_task"
# A worker's batch of spans goes out this often (ms), not every 5 s.
QUICK_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}


@pytest.fixture
def spans():
    """This process traced into memory (the test hook), for the test's length."""
    # The server's app as the server builds it: with tracing off when it is made, so
    # tracing.traced_http below is its one wrapper, whichever test imported it first.
    import voiceplatform.asgi  # noqa: F401

    exporter = InMemorySpanExporter()
    tracing.install_for_tests(exporter)
    yield exporter
    tracing.uninstall()


@pytest.fixture
async def traced_http(spans):
    """httpx over our ASGI app in-process, its HTTP side traced as the server's is."""
    from voiceplatform.asgi import application

    transport = httpx.ASGITransport(
        app=tracing.traced_http(application), client=("127.0.0.1", 5000)
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
async def bash_session(make_session):
    return await make_session(status="active", tools=policy.definitions(["bash"]))


async def _post_bash(client, session, call_id: str, command: str):
    return await client.post(
        "/tools/bash",
        json={"call_id": call_id, "arguments": {"command": command}},
        headers=bearer(session),
    )


async def _finished(exporter, name: str):
    """The spans finished once one named name has (within 10 s)."""

    async def ended():
        done = exporter.get_finished_spans()
        return any(span.name == name for span in done) and done

    return await eventually(ended) or exporter.get_finished_spans()


def _one(spans, name: str):
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, f"{name}: {[span.name for span in spans]}"
    return found[0]


def _tool_attributes(span) -> tuple:
    attributes = span.attributes if hasattr(span, "attributes") else span["attributes"]
    return (
        attributes["voice.session_id"],
        attributes["voice.call_id"],
        attributes["voice.tool_name"],
    )


async def test_one_trace_follows_a_tool_call_from_the_request_into_the_sandbox(
    traced_http, spans, bash_session
):
    response = await _post_bash(traced_http, bash_session, "call_traced", "echo traced")

    assert response.status_code == 200
    assert response.json()["output"] == "traced\n"
    # The worker's spans end after it has handed the result over.
    finished = await _finished(spans, TASK)
    chain = [
        _one(finished, name)
        for name in (REQUEST, "tool.call", TASK, "tool.run", "sandbox.run", "sandbox.spawn")
    ]
    assert {span.context.trace_id for span in chain} == {chain[0].context.trace_id}
    assert chain[0].parent is None
    for parent, child in zip(chain, chain[1:], strict=False):
        assert child.parent.span_id == parent.context.span_id, f"{child.name} under {parent.name}"
    ours = (str(bash_session.pk), "call_traced", "bash")
    assert _tool_attributes(chain[1]) == ours
    assert _tool_attributes(chain[3]) == ours
    assert chain[0].attributes["http.route"] == "/tools/<str:name>"
    assert chain[3].attributes["voice.tool_status"] == "succeeded"
    assert chain[5].attributes["process.pid"] > 0


async def test_the_models_tool_call_on_the_sideband_is_a_trace_of_its_own(
    traced_http, spans, simulator
):
    call = await open_call(traced_http)
    try:
        await held(call)
        call.say("Please list files")
        await call.wait_for(
            lambda e: (
                e["type"] == "response.output_audio_transcript.done"
                and e["transcript"].startswith("Here is what I found")
            ),
            timeout=30,  # a real worker runs it: generous for a loaded machine
        )
    finally:
        await call.close()

    finished = await _finished(spans, TASK)
    connect = _one(finished, "POST /sdp")
    chain = [_one(finished, name) for name in ("tool.call", TASK, "tool.run", "sandbox.spawn")]
    assert chain[0].parent is None
    assert chain[0].attributes["voice.tool_origin"] == "sideband"
    assert chain[0].attributes["voice.session_id"] == call.session["session_id"]
    assert chain[0].attributes["voice.tool_name"] == "bash"
    assert {span.context.trace_id for span in chain} == {chain[0].context.trace_id}
    assert chain[0].context.trace_id != connect.context.trace_id
    # Holding the call (its lease renewed every second) adds nothing to the trace of
    # the request that started it, after that request ended.
    later = [
        span.name
        for span in finished
        if span.context.trace_id == connect.context.trace_id and span.end_time > connect.end_time
    ]
    assert later == []


@pytest.fixture
def receiver():
    with OtlpReceiver("http/protobuf") as running:
        yield running


@pytest.fixture
def traced_worker(real_celery, receiver, tmp_path):
    """A real Celery worker process exporting its spans to the receiver."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        **QUICK_EXPORT,
    }
    with worker_running("traced", tmp_path / "worker.log", env=env) as process:
        yield process


async def test_a_worker_goes_on_with_the_trace_of_the_request_that_queued_the_call(
    traced_worker, receiver, traced_http, spans, bash_session
):
    response = await _post_bash(traced_http, bash_session, "call_far", "echo far")

    assert response.status_code == 200
    assert response.json()["output"] == "far\n"
    web = spans.get_finished_spans()
    request, call, publish = (_one(web, name) for name in (REQUEST, "tool.call", PUBLISH))
    assert publish.parent.span_id == call.context.span_id
    assert call.parent.span_id == request.context.span_id

    async def exported():  # the task's span ends last
        return receiver.named(TASK)

    assert await eventually(exported, timeout=20), f"the worker exported no {TASK}"
    trace_id = format(request.context.trace_id, "032x")
    task, run, sandbox, spawn = (
        receiver.named(name)[0] for name in (TASK, "tool.run", "sandbox.run", "sandbox.spawn")
    )
    # The task's parent is the web's publish: its context came in the message's headers.
    assert task["parent_id"] == format(publish.context.span_id, "016x")
    assert run["parent_id"] == task["span_id"]
    assert sandbox["parent_id"] == run["span_id"]
    assert spawn["parent_id"] == sandbox["span_id"]
    assert {span["trace_id"] for span in (task, run, sandbox, spawn)} == {trace_id}
    assert task["service"] == "voiceplatform-worker"
    assert _tool_attributes(run) == (str(bash_session.pk), "call_far", "bash")
    # The worker's own database queries are in the trace too (psycopg).
    queries = [
        span
        for span in receiver.spans
        if span["trace_id"] == trace_id and span["attributes"].get("db.system") == "postgresql"
    ]
    assert queries


async def test_a_call_queued_to_the_worker_holding_its_workspace_keeps_its_trace(
    traced_worker, receiver, traced_http, spans, bash_session, settings
):
    # The first call claims the workspace; the second goes to that worker's own queue.
    first = await _post_bash(traced_http, bash_session, "call_first", "echo one > f")
    assert first.status_code == 200
    spans.clear()

    second = await _post_bash(traced_http, bash_session, "call_second", "cat f")

    assert second.json()["output"] == "one\n"
    publish = _one(spans.get_finished_spans(), PUBLISH)
    own_queue = f"{settings.TOOL_QUEUE_SLOW}.traced@"
    assert publish.attributes["messaging.destination"].startswith(own_queue)

    async def exported():
        return [
            span
            for span in receiver.named("tool.run")
            if span["attributes"]["voice.call_id"] == "call_second"
        ]

    (run,) = await eventually(exported, timeout=20)
    assert run["trace_id"] == format(publish.context.trace_id, "032x")


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_server_with_an_otlp_endpoint_exports_its_spans_there(protocol, tmp_path):
    port = free_port()
    with OtlpReceiver(protocol) as receiver:
        env = {
            **embedded_env(port, tmp_path / "var"),
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_SERVICE_NAME": "voice-under-test",
            **QUICK_EXPORT,
        }
        server = start_server(daphne(port), port, env, tmp_path / "server.log")
        try:
            created = httpx.post(f"http://127.0.0.1:{port}/session", json={}, timeout=30)
            assert created.status_code == 201, created.text

            def exported():
                return receiver.named("POST /session")

            found = _wait(exported)
        finally:
            stop_server(server)

    (request,) = found
    assert request["service"] == "voice-under-test"
    assert request["parent_id"] == ""
    # The upstream call it made (the simulator, mounted in the same server) is a client
    # span of the same trace, and the simulator's side of it a server span under that.
    same_trace = [span for span in receiver.spans if span["trace_id"] == request["trace_id"]]
    client = [span for span in same_trace if span["kind"] == 3]  # SPAN_KIND_CLIENT
    assert client, [span["name"] for span in same_trace]
    simulator = [span for span in same_trace if span["name"].startswith("POST /simulator")]
    assert simulator and simulator[0]["parent_id"] in {span["span_id"] for span in client}
    # Probes are left out.
    assert not [span for span in receiver.spans if "/health" in span["name"]]


def _wait(check, timeout: float = 20.0):
    """check's answer once truthy, or its last after timeout s (for the caller's assert)."""
    deadline = time.monotonic() + timeout
    while not (found := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


WHAT_IS_SET_UP = """
import json, sys
import voiceplatform.asgi as asgi
from celery.signals import worker_process_init
worker_process_init.send(sender=None)
sdk_loaded = "opentelemetry.sdk.trace" in sys.modules
from opentelemetry import trace
from voiceplatform import tracing
http_app = asgi.application.app.application_mapping["http"]
print(json.dumps({
    "provider": type(trace.get_tracer_provider()).__name__,
    "sdk_loaded": sdk_loaded,
    "enabled": tracing.enabled(),
    "http_app": type(http_app).__name__,
}))
"""


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (
            "",
            {
                "provider": "ProxyTracerProvider",
                "sdk_loaded": False,
                "enabled": False,
                "http_app": "BodySizeLimit",
            },
        ),
        (
            "http://127.0.0.1:9",
            {
                "provider": "TracerProvider",
                "sdk_loaded": True,
                "enabled": True,
                "http_app": "OpenTelemetryMiddleware",
            },
        ),
    ],
)
def test_without_an_endpoint_no_tracer_provider_is_installed(endpoint, expected, tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("OTEL_") and key != "DJANGO_SETTINGS_MODULE"
    }
    env |= {
        "DJANGO_SETTINGS_MODULE": "voiceplatform.settings",
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "VAR_DIR": str(tmp_path / "var"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
    }
    done = subprocess.run(
        [sys.executable, "-c", WHAT_IS_SET_UP],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected


async def test_an_agents_steps_model_calls_and_tools_are_spans_of_its_tool_run(
    traced_http, spans, make_session, simulator
):
    session = await make_session(
        status="active", tools=policy.definitions(["delegate", "write_file"])
    )
    arguments = {"agent": "coder", "instruction": "Create a file called hello.txt with hi there"}

    started = await traced_http.post(
        "/tools/delegate",
        json={"call_id": "call_agent", "arguments": arguments},
        headers=bearer(session),
    )

    assert started.status_code == 202

    async def finished():
        execution = await ToolExecution.objects.aget(session=session, call_id="call_agent")
        return execution.is_finished and execution

    execution = await eventually(finished, timeout=60)
    assert execution and execution.status == "succeeded", execution and execution.output
    done = await _finished(spans, TASK)
    run = _one(done, "tool.run")
    agent = _one(done, "agent.run")
    steps = sorted(
        (span for span in done if span.name == "agent.step"),
        key=lambda span: span.attributes["agent.step"],
    )
    models = [span for span in done if span.name.startswith("chat ")]
    tool = _one(done, "agent.tool")
    assert agent.parent.span_id == run.context.span_id
    assert agent.attributes["voice.agent"] == "coder"
    assert [step.attributes["agent.step"] for step in steps] == [1, 2]
    assert all(step.parent.span_id == agent.context.span_id for step in steps)
    # One model call a step, under it; the tool the first step asked for, under it too.
    assert sorted(model.parent.span_id for model in models) == sorted(
        step.context.span_id for step in steps
    )
    assert all(model.attributes["gen_ai.usage.output_tokens"] > 0 for model in models)
    assert tool.parent.span_id == steps[0].context.span_id
    assert tool.attributes["voice.tool_name"] == "write_file"
    # The model calls went out over httpx2, traced as client calls under them.
    clients = [span for span in done if span.kind == SpanKind.CLIENT and span.parent]
    model_ids = {model.context.span_id for model in models}
    assert [span for span in clients if span.parent.span_id in model_ids]
    assert {span.context.trace_id for span in (run, agent, *steps, *models, tool)} == {
        run.context.trace_id
    }
