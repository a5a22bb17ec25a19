"""The simulator's HTTP endpoints, shaped like OpenAI's Realtime REST API."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import time
from datetime import UTC, datetime

import httpx
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from standardwebhooks.webhooks import Webhook

from . import peer, responses
from .auth import bearer_token, has_server_key
from .state import STATE, TERMINAL_STATES, Fault
from .traffic import TRAFFIC, Pace


def _error(status: int, message: str, code: str, kind: str = "invalid_request_error"):
    return JsonResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}, status=status
    )


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _error(404, f"Invalid URL ({request.method} {request.path}).", "not_found")


def server_error(request: HttpRequest) -> JsonResponse:
    return _error(500, "The server had an error.", "server_error", "server_error")


def _server_key_ok(request: HttpRequest) -> bool:
    return has_server_key(request.headers.get("Authorization", ""))


# Headers a proxy adds. Behind a proxy on this machine every client arrives from a
# loopback address, so a request carrying one of them did not come from this machine.
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def _control_refusal(request: HttpRequest) -> JsonResponse | None:
    """Control endpoints (faults, resets, signed webhooks) answer only the server key,
    from this machine, not through a proxy; the refusal, or None when allowed."""
    if any(name in request.headers for name in PROXY_HEADERS):
        return _error(
            403, "Control endpoints do not answer requests that came through a proxy.", "forbidden"
        )
    local = request.META.get("REMOTE_ADDR") in ("127.0.0.1", "::1")
    if not (local and _server_key_ok(request)):
        return _unauthorized()
    return None


def _unauthorized() -> JsonResponse:
    return _error(401, "Incorrect API key provided.", "invalid_api_key")


def _loopback_url(url: object) -> httpx.URL | None:
    """url parsed, when it is http(s) to a loopback host (127.0.0.0/8, [::1], localhost);
    the request is then sent to this same parsed URL, so no second parser may disagree."""
    if not isinstance(url, str):
        return None
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    if parsed.scheme not in ("http", "https"):
        return None
    host = parsed.host.lower()
    if host == "localhost":
        return parsed
    try:
        return parsed if ipaddress.ip_address(host).is_loopback else None
    except ValueError:
        return None


async def _fault(operation: str) -> JsonResponse | None:
    """Applies the switched-on failure mode to this operation, if any."""
    fault = STATE.take_fault(operation)
    if fault is None:
        return None
    if fault.mode == "slow":
        await asyncio.sleep(fault.delay)
        return None
    if fault.mode == "rate_limit":
        response = _error(429, "Rate limit reached.", "rate_limit_exceeded", "rate_limit_error")
        response["retry-after-ms"] = str(fault.retry_after_ms)
        response["retry-after"] = str(max(1, fault.retry_after_ms // 1000))
    else:
        response = _error(fault.status, "The server had an error.", "server_error", "server_error")
    response["x-request-id"] = "req_sim_" + secrets.token_hex(6)
    return response


def _json_body(request: HttpRequest) -> dict | None:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def index(request: HttpRequest) -> JsonResponse:
    """GET /simulator/ (the README names it): what is mounted here and how to use it."""
    if request.method not in ("GET", "HEAD"):
        return _error(405, "Method not allowed.", "method_not_allowed")
    return JsonResponse(
        {
            "simulator": "voiceplatform's stand-in for OpenAI's realtime and Responses APIs",
            "base_url": request.build_absolute_uri(request.path),
            "endpoints": [
                "POST v1/realtime/client_secrets",
                "POST v1/realtime/calls",
                "POST v1/realtime/calls/<call_id>/<accept|reject|hangup|refer>",
                "WS v1/realtime?call_id=<call_id> (the sideband)",
                "POST v1/responses",
                "GET health/live",
            ],
            "live_calls": sum(
                1 for call in STATE.calls.values() if call.state not in TERMINAL_STATES
            ),
        }
    )


async def live(request: HttpRequest) -> JsonResponse:
    """Liveness: what a process that started the simulator polls until it serves."""
    return JsonResponse({"status": "alive"})


@csrf_exempt
async def client_secrets(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _error(405, "Method not allowed.", "method_not_allowed")
    if not _server_key_ok(request):
        return _unauthorized()
    if failed := await _fault("client_secrets"):
        return failed
    body = _json_body(request)
    if body is None:
        return _error(400, "The body must be a JSON object.", "invalid_json")
    session = body.get("session") or {"type": "realtime", "model": "gpt-realtime"}
    if not isinstance(session, dict) or session.get("type") != "realtime":
        return _error(400, "session.type must be 'realtime'.", "invalid_value")
    expires = body.get("expires_after") or {}
    ttl = expires.get("seconds", 600) if isinstance(expires, dict) else None
    if not isinstance(ttl, int) or not 10 <= ttl <= 7200:
        return _error(400, "expires_after.seconds must be 10..7200.", "invalid_value")
    session = {"id": "sess_sim_" + secrets.token_hex(8), "object": "realtime.session", **session}
    value, expires_at = STATE.issue_secret(session, ttl)
    return JsonResponse({"value": value, "expires_at": expires_at, "session": session})


@csrf_exempt
async def create_response(request: HttpRequest) -> HttpResponse:
    """The Responses API, played by the script in responses.py (the agents' model)."""
    if request.method != "POST":
        return _error(405, "Method not allowed.", "method_not_allowed")
    if not _server_key_ok(request):
        return _unauthorized()
    if failed := await _fault("responses"):
        return failed
    body = _json_body(request)
    if body is None:
        return _error(400, "The body must be a JSON object.", "invalid_json")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return _error(400, "model is required.", "missing_required_parameter")
    if not isinstance(body.get("input"), str | list):
        return _error(400, "input must be a string or a list of items.", "invalid_value")
    if body.get("stream"):
        return _error(400, "The simulator does not stream responses.", "unsupported_value")
    return JsonResponse(responses.respond(body))


@csrf_exempt
async def calls(request: HttpRequest) -> HttpResponse:
    """Browser form (raw SDP, ephemeral key) or SDK form (multipart sdp+session, server key)."""
    if request.method != "POST":
        return _error(405, "Method not allowed.", "method_not_allowed")
    content_type = request.content_type
    if content_type == "application/sdp":
        # An ephemeral key carries its session; the server key gets the defaults.
        session = STATE.session_for_secret(bearer_token(request.headers.get("Authorization", "")))
        if session is None and _server_key_ok(request):
            session = {"type": "realtime", "model": "gpt-realtime"}
        if session is None:
            return _unauthorized()
        offer = request.body.decode("utf-8", "replace")
    elif content_type == "multipart/form-data":
        if not _server_key_ok(request):
            return _unauthorized()
        offer = request.POST.get("sdp", "")
        try:
            session = json.loads(request.POST.get("session") or '{"type": "realtime"}')
        except ValueError:
            return _error(400, "session must be JSON.", "invalid_value")
        if not isinstance(session, dict):
            return _error(400, "session must be an object.", "invalid_value")
    else:
        return _error(400, "Send application/sdp or multipart/form-data.", "invalid_content_type")
    if failed := await _fault("calls"):
        return failed
    call = STATE.new_call(session)
    try:
        answer = await peer.answer(call, offer)
    except peer.InvalidOffer as exc:
        STATE.calls.pop(call.call_id, None)
        return _error(400, str(exc), "invalid_offer")
    response = HttpResponse(answer, status=201, content_type="application/sdp")
    response["Location"] = f"/v1/realtime/calls/{call.call_id}"
    return response


@csrf_exempt
async def call_action(request: HttpRequest, call_id: str, action: str) -> HttpResponse:
    if request.method != "POST":
        return _error(405, "Method not allowed.", "method_not_allowed")
    if action not in {"hangup", "accept", "reject", "refer"}:
        return _error(404, f"Unknown action '{action}'.", "not_found")
    if not _server_key_ok(request):
        return _unauthorized()
    if failed := await _fault(action):
        return failed
    call = STATE.calls.get(call_id)
    if call is None:
        return _error(404, f"Call '{call_id}' not found.", "call_not_found")
    body = _json_body(request) or {}
    if action == "hangup":
        await call.close("hung_up")
    elif action == "accept":
        if body.get("type") != "realtime":
            return _error(400, "type must be 'realtime'.", "invalid_value")
        call.session = {**call.session, **body}
        call.conversation.session = call.session
        call.state = "accepted"
    elif action == "reject":
        call.state = f"rejected:{body.get('status_code', 603)}"
    elif action == "refer":
        call.state = f"referred:{body.get('target_uri', '')}"
    return HttpResponse(status=200)


# --- control endpoints: for tests and local development --------------------------------


@csrf_exempt
async def control_fault(request: HttpRequest) -> HttpResponse:
    """POST {"mode": "error"|"rate_limit"|"slow"|"off", "status", "delay", "count",
    "operations": [...]} switches the failure mode. Operations: client_secrets, calls,
    responses, hangup, accept, reject, refer, and sideband (only when named: its
    connection is refused, or slow to open)."""
    if refused := _control_refusal(request):
        return refused
    body = _json_body(request)
    if body is None or body.get("mode") not in {"error", "rate_limit", "slow", "off"}:
        return _error(400, "mode must be error, rate_limit, slow or off.", "invalid_value")
    if body["mode"] == "off":
        STATE.fault = None
    else:
        STATE.fault = Fault(
            mode=body["mode"],
            status=int(body.get("status", 500)),
            delay=float(body.get("delay", 0.0)),
            retry_after_ms=int(body.get("retry_after_ms", 100)),
            remaining=body.get("count"),
            operations=frozenset(body.get("operations") or ()),
        )
    return JsonResponse({"fault": body["mode"]})


@csrf_exempt
async def control_reset(request: HttpRequest) -> HttpResponse:
    if refused := _control_refusal(request):
        return refused
    TRAFFIC.stop()
    await STATE.reset()
    return JsonResponse({"reset": True})


async def control_call(request: HttpRequest, call_id: str) -> HttpResponse:
    if refused := _control_refusal(request):
        return refused
    call = STATE.calls.get(call_id)
    if call is None:
        return _error(404, f"Call '{call_id}' not found.", "call_not_found")
    return JsonResponse(call.summary())


MAX_TRAFFIC_SECONDS = 3600


@csrf_exempt
async def control_traffic(request: HttpRequest) -> HttpResponse:
    """Load mode (traffic.py). POST {"seconds", "pace": {...}, "call_ids": [...],
    "seed"} starts calls talking at a real pace (by default every live call with a
    sideband connection); GET says what they did; DELETE stops them all."""
    if refused := _control_refusal(request):
        return refused
    calls = list(STATE.calls.values())
    if request.method == "GET":
        return JsonResponse(TRAFFIC.stats(calls))
    if request.method == "DELETE":
        return JsonResponse({"stopped": TRAFFIC.stop()})
    if request.method != "POST":
        return _error(405, "Method not allowed.", "method_not_allowed")
    body = _json_body(request)
    if body is None:
        return _error(400, "The body must be a JSON object.", "invalid_json")
    seconds = body.get("seconds")
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 < seconds <= MAX_TRAFFIC_SECONDS
    ):
        return _error(
            400, f"seconds must be a number in (0, {MAX_TRAFFIC_SECONDS}].", "invalid_value"
        )
    try:
        pace = Pace.from_json(body.get("pace", {}))
    except (ValueError, TypeError) as exc:
        return _error(400, f"pace: {exc}", "invalid_value")
    wanted = body.get("call_ids")
    if wanted is not None:
        if not isinstance(wanted, list) or not all(isinstance(c, str) for c in wanted):
            return _error(400, "call_ids must be a list of call ids.", "invalid_value")
        unknown = [c for c in wanted if c not in STATE.calls]
        if unknown:
            return _error(404, f"Call '{unknown[0]}' not found.", "call_not_found")
        calls = [STATE.calls[c] for c in wanted]
    else:
        calls = [c for c in calls if c.subscribers]
    calls = [c for c in calls if c.state not in TERMINAL_STATES]
    seed = body.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        return _error(400, "seed must be an integer.", "invalid_value")
    started = TRAFFIC.start(calls, pace, float(seconds), seed=seed)
    return JsonResponse({"started": started, "talking": len(TRAFFIC.talkers)})


def sign_webhook(secret: str, webhook_id: str, timestamp: int, body: str) -> dict[str, str]:
    signature = Webhook(secret).sign(
        msg_id=webhook_id,
        timestamp=datetime.fromtimestamp(timestamp, tz=UTC),
        data=body,
    )
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


@csrf_exempt
async def control_webhook(request: HttpRequest) -> HttpResponse:
    """POST {"url", "type", "data"} sends a signed webhook event to url. With type
    `realtime.call.incoming` a SIP call is registered first, so it can be accepted."""
    if refused := _control_refusal(request):
        return refused
    body = _json_body(request)
    if body is None or not body.get("url") or not body.get("type"):
        return _error(400, "url and type are required.", "invalid_value")
    # Signed webhooks go to a server on this machine only, never to an address of a
    # caller's choosing.
    url = _loopback_url(body["url"])
    if url is None:
        return _error(
            400, "url must be http(s) on this machine: 127.x, [::1] or localhost.", "invalid_url"
        )
    data = dict(body.get("data") or {})
    if body["type"] == "realtime.call.incoming":
        call = STATE.new_call({"type": "realtime"})
        call.state = "ringing"
        data = {
            "call_id": call.call_id,
            "sip_headers": [{"name": "From", "value": "sip:+15551230000@sim.invalid"}],
            **data,
        }
    webhook_id = "wh_" + secrets.token_hex(12)
    now = int(time.time())
    payload = json.dumps(
        {
            "id": "evt_" + secrets.token_hex(12),
            "object": "event",
            "type": body["type"],
            "created_at": now,
            "data": data,
        }
    )
    headers = sign_webhook(settings.SIMULATOR_WEBHOOK_SECRET, webhook_id, now, payload)
    status, error = None, None
    try:
        # Not following redirects: a loopback server may not send it elsewhere.
        async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as http:
            delivered = await http.post(url, content=payload, headers=headers)
        status = delivered.status_code
    except httpx.HTTPError as exc:
        error = type(exc).__name__
    return JsonResponse(
        {"webhook_id": webhook_id, "status": status, "error": error, "call_id": data.get("call_id")}
    )
