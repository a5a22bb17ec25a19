"""Hostile input at scale: schemathesis generates requests, valid and not, for every
operation GET /api/openapi.json describes, and sends them to a live daphne (the
simulator as its upstream). No answer may be a 500, each must be one the document
describes (status, content type, headers, body), and a rejected request stores nothing.

Each operation gets valid requests (positive) and, where it takes input, invalid ones
(negative); two in three carry the token of a live session and name it (or, where an
API key opens the operation, the key of an API client), so they reach the code behind
the door. Bounded: MAX_EXAMPLES per operation and mode, no shrinking.
(The cases are drawn with hypothesis in plain pytest tests rather than through
schemathesis's pytest plugin, whose items do not keep module and session fixtures.)
"""

from __future__ import annotations

import itertools
import json
import time

import httpx
import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import NotAServerErrorConfig

from sessions_app.models import ConversationItem, VoiceSession, WebhookEvent
from sessions_app.simulator import sign_webhook
from tests.factories import ApiKeyFactory
from tests.support import daphne, database_env, free_port, start_server, stop_server
from tools_app.models import ToolExecution
from voiceplatform import openapi

# The test process only counts rows, in its own transaction; the server commits its own.
pytestmark = pytest.mark.django_db

MAX_EXAMPLES = 25
TOOLS = ["read_file", "glob", "grep"]  # nothing that runs commands or leaves the machine
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
STORED = (VoiceSession, ConversationItem, ToolExecution, WebhookEvent)


@pytest.fixture(scope="module")
def live_api(simulator_process, django_db_setup, django_db_blocker, tmp_path_factory):
    """daphne on this run's PostgreSQL and Redis, tools run in-process, limits raised so
    generated traffic meets the checks rather than the rate limits. The rows it stores
    are emptied once at the end (not after each operation: that costs seconds each)."""
    base = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    with django_db_blocker.unblock():
        env = {
            **database_env(connection.settings_dict),
            "DJANGO_SETTINGS_MODULE": "voiceplatform.settings_test",
            "CELERY_TASK_ALWAYS_EAGER": "1",
            "SIDEBAND_ENABLED": "0",  # nothing is written behind a request's back
            "OPENAI_BASE_URL": simulator_process.url,
            "OPENAI_API_KEY": "",
            "OPENAI_WEBHOOK_SECRET": django_settings.SIMULATOR_WEBHOOK_SECRET,
            "TOOLS_FOR_ANONYMOUS": ",".join(TOOLS),
            "VAR_DIR": str(base / "var"),
            "PORT": str(port),
            **{
                name: "100000"
                for name in (
                    "SESSION_RATE_LIMIT_PER_IP",
                    "SESSION_RATE_LIMIT_PER_USER",
                    "SESSION_LIVE_PER_IP",
                    "SESSION_LIVE_PER_CALLER",
                    "SESSION_CAPACITY",
                    "SESSION_EVENTS_PER_MINUTE",
                    "TOOLS_RATE_PER_MINUTE",
                    "WEBHOOK_RATE_PER_MINUTE",
                )
            },
        }
    server = start_server(daphne(port), port, env, base / "server.log")
    yield f"http://127.0.0.1:{port}"
    stop_server(server)
    with django_db_blocker.unblock():
        call_command("flush", interactive=False, verbosity=0)


@pytest.fixture(scope="module")
def api_key(live_api, django_db_blocker) -> str:
    """The raw key of an API client of the server's (committed, so the server sees it),
    for the generated requests to operations an API key opens."""
    with django_db_blocker.unblock():
        return ApiKeyFactory().raw


@pytest.fixture
def stored_rows(live_api):
    """How many rows of each kind a request could store, read by this process."""

    def count() -> dict[str, int]:
        return {model.__name__: model.objects.count() for model in STORED}

    return count


@pytest.fixture
def voice_session(live_api) -> dict:
    """A live session of the server's, for the generated requests that carry its token."""
    created = httpx.post(f"{live_api}/session", json={}, timeout=30)
    assert created.status_code == 201, created.text
    return created.json()


# The bodies /sdp and /recording take go as generated: text and bytes.
schemathesis.serializer.alias("application/sdp", "text/plain")
schemathesis.serializer.alias(list(openapi.RECORDING_TYPES), "application/octet-stream")
# The document as this code builds it; tests/test_openapi.py proves it is the one served.
schema = schemathesis.openapi.from_dict(openapi.document())
schema.config.update(request_timeout=30)
# Upstream failures and degraded service are documented answers; a 500 never is.
schema.config.checks.not_a_server_error = NotAServerErrorConfig(
    expected_statuses=["2xx", "3xx", "4xx", "502", "503", "504"]
)
OPERATIONS = [result.ok() for result in schema.get_all_operations()]
RUNS = [
    pytest.param(operation, mode, id=f"{operation.label} {mode}")
    for operation in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # Nothing to get wrong in a request without parameters or a body.
    if mode == GenerationMode.POSITIVE
    or {"parameters", "requestBody"} & set(operation.definition.raw)
]


def _takes_a_session_token(operation) -> bool:
    return {"sessionToken": []} in operation.definition.raw.get("security", [])


def _takes_only_an_api_key(operation) -> bool:
    """An operation for owners of sessions (GET /sessions): an API key opens it."""
    security = operation.definition.raw.get("security", [])
    return {"apiKey": []} in security and {} not in security


def _as_the_api_client(case, api_key: str) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {api_key}"}


def _as_the_session(case, session: dict) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {session['session_token']}"}
    if "X-Voice-Session-Id" in case.headers:
        case.headers["X-Voice-Session-Id"] = session["session_id"]
    if case.path_parameters and "session_id" in case.path_parameters:
        case.path_parameters["session_id"] = session["session_id"]
    if case.path_parameters and "name" in case.path_parameters:
        case.path_parameters["name"] = TOOLS[len(str(case.body)) % len(TOOLS)]
        call_id = case.body.get("call_id") if isinstance(case.body, dict) else None
        if isinstance(call_id, str) and len(call_id) % 2:
            # Arguments the tool takes, so some calls run (generated ones rarely fit).
            case.path_parameters["name"] = "glob"
            case.body = {**case.body, "arguments": {"pattern": call_id}}


def _signed_webhook(case, live_api: str) -> httpx.Response:
    """The generated event, signed as the simulator signs webhooks."""
    body = json.dumps(case.body)
    headers = sign_webhook(
        django_settings.SIMULATOR_WEBHOOK_SECRET,
        (case.headers or {}).get("webhook-id") or "wh_fuzz",
        int(time.time()),
        body,
    )
    return httpx.post(f"{live_api}/webhook/openai", content=body, headers=headers, timeout=30)


@pytest.mark.parametrize(("operation", "mode"), RUNS)
def test_generated_requests_get_documented_answers_and_rejected_ones_store_nothing(
    operation, mode, live_api, voice_session, api_key, stored_rows
):
    turns = itertools.cycle([True, True, False])

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode))
    def send(case):
        authorized = next(turns)
        if authorized and _takes_a_session_token(operation):
            _as_the_session(case, voice_session)
        elif authorized and _takes_only_an_api_key(operation):
            _as_the_api_client(case, api_key)
        before = stored_rows()
        if (
            authorized
            and operation.path == "/webhook/{provider}"
            and isinstance(case.body, dict)
            and (case.path_parameters or {}).get("provider") == "openai"
        ):
            response = _signed_webhook(case, live_api)
        else:
            response = case.call(base_url=live_api, timeout=30)
        after = stored_rows()

        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 400:
            assert after == before, f"{operation.label} answered {response.status_code}"

    send()
