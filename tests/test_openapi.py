"""GET /api/openapi.json: the OpenAPI 3.1 document of the HTTP API, kept true: every
route of the API is in it with its methods (and nothing else is), and real answers of
the server, good and bad, match what it says."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest
import schemathesis
from django.urls import URLResolver, get_resolver
from jsonschema import Draft202012Validator

from ops_app import actions as ops_actions
from sessions_app.probe import offering_peer
from sessions_app.simulator import sign_webhook
from voiceplatform import openapi

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "whsec_" + base64.b64encode(b"openapi-webhook-secret-0123").decode()
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 28


def _routes(patterns=None, prefix: str = ""):
    """(route, view) for every URL pattern, included ones too."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, route)
        else:
            yield route, pattern.callback


def _api_routes() -> dict[str, set[str]]:
    """The HTTP API's routes as OpenAPI paths, with the methods each view takes: every
    JSON endpoint (an api_view), the simulator's stand-in for OpenAI's API aside."""
    found = {}
    for route, view in _routes():
        methods = getattr(view, "api_methods", None)
        if methods is None or route.startswith("simulator/"):
            continue
        path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
        found[path] = {method.lower() for method in methods}
    return found


def test_every_route_of_the_api_is_documented_with_its_methods_and_nothing_else():
    documented = {
        path: {method for method in item if method in ("get", "post", "put", "patch", "delete")}
        for path, item in openapi.document()["paths"].items()
    }

    assert documented == _api_routes()
    assert {"/session", "/sdp", "/tools/{name}", "/webhook/{provider}"} <= set(documented)


def test_the_document_is_openapi_3_1_with_valid_schemas_and_every_error_code():
    document = openapi.document()
    loaded = schemathesis.openapi.from_dict(document)

    operations = [result.ok() for result in loaded.get_all_operations()]
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)

    assert document["openapi"] == "3.1.0"
    assert len(operations) == sum(len(methods) for methods in _api_routes().values())
    codes = document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
    assert "unknown_field" in codes["code"]["enum"] and "maintenance" in codes["code"]["enum"]


async def test_it_is_served_to_anyone_and_may_be_cached(http):
    response = await http.get("/api/openapi.json")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert "public" in response.headers["Cache-Control"]
    assert "max-age" in response.headers["Cache-Control"]
    assert response.json() == json.loads(json.dumps(openapi.document()))


class Conformance:
    """Checks answers against the document: a documented status, content type and
    headers, and a body its schema takes (schemathesis's own validation)."""

    def __init__(self) -> None:
        self.document = openapi.document()
        self.schema = schemathesis.openapi.from_dict(self.document)
        self.seen: set[tuple[str, str, int]] = set()

    def check(self, method: str, path: str, response) -> None:
        operation = self.document["paths"][path][method.lower()]
        status = str(response.status_code)
        assert status in operation["responses"], f"{method} {path}: {status} is not documented"
        answer = operation["responses"][status]
        if "$ref" in answer:
            answer = self.document["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
        media = response.headers.get("Content-Type", "").split(";")[0].strip()
        assert media in answer.get("content", {}), f"{method} {path}: {media} for {status}"
        for name, header in answer.get("headers", {}).items():
            if header["required"]:
                assert name in response.headers, f"{method} {path} {status}: no {name}"
        self.schema[path][method].validate_response(response)
        self.seen.add((method, path, response.status_code))


def _bearer(session: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {session['session_token']}"}


async def test_real_answers_good_and_bad_match_the_document(
    http, simulator, settings, make_api_key
):
    settings.OPENAI_WEBHOOK_SECRETS = [SECRET]
    conform = Conformance()

    created = await http.post("/session", json={"voice": "marin", "instructions": "Be brief."})
    conform.check("POST", "/session", created)
    session = created.json()
    sid, auth = session["session_id"], {"Authorization": f"Bearer {session['session_token']}"}
    conform.check("POST", "/session", await http.post("/session", json={"colour": "red"}))
    conform.check(
        "POST",
        "/session",
        await http.post("/session", content=b"x", headers={"Content-Type": "text/plain"}),
    )
    conform.check("POST", "/session", await http.get("/session"))

    tools = await http.get("/tools/", headers=auth)
    conform.check("GET", "/tools/", tools)
    ran = await http.post(
        "/tools/read_file",
        json={"call_id": "call_1", "arguments": {"file_path": "missing.txt"}},
        headers=auth,
    )
    conform.check("POST", "/tools/{name}", ran)
    conform.check(
        "POST",
        "/tools/{name}",
        await http.post("/tools/nope", json={"call_id": "c", "arguments": {}}, headers=auth),
    )
    conform.check(
        "POST",
        "/tools/{name}",
        await http.post("/tools/read_file", json={"call_id": ""}, headers=auth),
    )

    peer, _ = await offering_peer()
    try:
        offer = peer.localDescription.sdp
        answered = await http.post(
            "/sdp", content=offer, headers={**auth, "Content-Type": "application/sdp"}
        )
        conform.check("POST", "/sdp", answered)
        again = await http.post(
            "/sdp", content=offer, headers={**auth, "Content-Type": "application/sdp"}
        )
        conform.check("POST", "/sdp", again)
    finally:
        await peer.close()
    conform.check(
        "POST",
        "/sdp",
        await http.post("/sdp", content=offer, headers={"Content-Type": "application/sdp"}),
    )

    events = {
        "events": [
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": "item_1",
                "transcript": "hello",
            }
        ]
    }
    relayed = await http.post(f"/session/{sid}/events", json=events, headers=auth)
    conform.check("POST", "/session/{session_id}/events", relayed)
    conform.check(
        "POST",
        "/session/{session_id}/events",
        await http.post("/session/other/events", json=events, headers=auth),
    )
    recording = await http.post(
        f"/session/{sid}/recording", content=WAV, headers={**auth, "Content-Type": "audio/wav"}
    )
    conform.check("POST", "/session/{session_id}/recording", recording)
    ended = await http.post(f"/session/{sid}/end", headers=auth)
    conform.check("POST", "/session/{session_id}/end", ended)
    conform.check(
        "POST",
        "/session/{session_id}/events",
        await http.post(f"/session/{sid}/events", json=events, headers=auth),
    )

    body = json.dumps({"type": "realtime.call.ended", "data": {"call_id": "rtc_x"}})
    hook = await http.post(
        "/webhook/openai",
        content=body,
        headers=sign_webhook(SECRET, "wh_1", int(time.time()), body),
    )
    conform.check("POST", "/webhook/{provider}", hook)
    conform.check(
        "POST",
        "/webhook/{provider}",
        await http.post(
            "/webhook/openai", content=body, headers={"Content-Type": "application/json"}
        ),
    )
    conform.check("POST", "/webhook/{provider}", await http.post("/webhook/other", json={}))

    key = await make_api_key()
    as_key = {"Authorization": f"Bearer {key.raw}"}
    keyed = await http.post("/session", json={}, headers=as_key)
    conform.check("POST", "/session", keyed)
    await http.post(keyed.json()["urls"]["end"], headers=_bearer(keyed.json()))
    conform.check("GET", "/sessions", await http.get("/sessions?limit=1", headers=as_key))
    conform.check("GET", "/sessions", await http.get("/sessions"))
    conform.check("GET", "/sessions", await http.get("/sessions?page=0", headers=as_key))
    resumed = await http.post(
        "/session", json={"resume": keyed.json()["session_id"]}, headers=as_key
    )
    conform.check("POST", "/session", resumed)
    conform.check(
        "POST",
        "/session",
        await http.post("/session", json={"resume": resumed.json()["session_id"]}, headers=as_key),
    )
    conform.check("POST", "/session", await http.post("/session", json={"resume": sid}))

    for path in ("/health", "/health/live", "/health/ready", "/metrics", "/api/openapi.json"):
        conform.check("GET", path, await http.get(path))

    assert {(m, p, s) for m, p, s in conform.seen if s < 300} >= {
        ("POST", "/session", 201),
        ("GET", "/sessions", 200),
        ("POST", "/sdp", 201),
        ("GET", "/tools/", 200),
        ("POST", "/tools/{name}", 200),
        ("POST", "/session/{session_id}/events", 200),
        ("POST", "/session/{session_id}/recording", 201),
        ("POST", "/session/{session_id}/end", 200),
        ("POST", "/webhook/{provider}", 200),
    }
    assert {s for _, _, s in conform.seen} >= {400, 401, 403, 404, 405, 409, 415}
    assert {s for m, p, s in conform.seen if p == "/session"} >= {201, 400, 404, 405, 409, 415}
    assert {s for m, p, s in conform.seen if p == "/sessions"} >= {200, 400, 401}


async def test_refusals_for_upstream_failures_maintenance_and_limits_match_the_document(
    http, simulator, settings
):
    settings.OPENAI_MAX_RETRIES = 0
    conform = Conformance()

    simulator.fault("error", status=500)
    conform.check("POST", "/session", await http.post("/session", json={}))
    simulator.fault("rate_limit", retry_after_ms=1500)
    conform.check("POST", "/session", await http.post("/session", json={}))
    simulator.fault("off")
    await ops_actions.maintenance_on(actor="test", message="Back soon")
    conform.check("POST", "/session", await http.post("/session", json={}))
    conform.check("GET", "/health", await http.get("/health"))
    await ops_actions.maintenance_off(actor="test")
    settings.SESSION_RATE_LIMIT_PER_IP = 1
    await http.post("/session", json={})
    conform.check("POST", "/session", await http.post("/session", json={}))

    assert {s for _, _, s in conform.seen} >= {429, 502, 503}
