"""The OpenAPI 3.1 document of the HTTP API, served at /api/openapi.json.

Request bodies are generated from the declared bodies (pydantic), error codes come from
ErrorCode and enumerations from the models, so the document follows the code; answers
are described here by hand, and tests/test_openapi.py holds them to what the server
sends (every route documented, real answers and a schemathesis run validated).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from pydantic import BaseModel

from ops_app.health import DISABLED, FAILING, OK
from sessions_app.bodies import EventsBody, SessionBody, SessionsQuery
from sessions_app.models import VoiceSession
from tools_app.bodies import ToolCallBody
from voiceplatform.errors import ErrorCode

OPENAPI_VERSION = "3.1.0"
SCHEMAS = "#/components/schemas/"
RECORDING_TYPES = ("audio/webm", "audio/ogg", "audio/mp4", "audio/wav")

# The error answers each status stands for, by name in components/responses.
ERRORS = {
    400: ("BadRequest", "The request is malformed: its body, a field or a header."),
    401: ("Unauthorized", "No credentials, or credentials that are forged or expired."),
    403: ("Forbidden", "Credentials of another session, or a tool this session may not use."),
    404: ("NotFound", "The session, tool or provider named does not exist."),
    405: ("MethodNotAllowed", "Another method; the Allow header says which."),
    409: ("Conflict", "The session's state does not allow this (ended, already connected)."),
    413: ("PayloadTooLarge", "The body is larger than this endpoint takes."),
    415: ("UnsupportedMediaType", "The body's Content-Type is not one this endpoint takes."),
    429: (
        "TooManyRequests",
        "A rate, live-session or running-call limit was reached; see Retry-After.",
    ),
    502: ("BadGateway", "The realtime upstream failed or gave an unusable answer."),
    503: ("ServiceUnavailable", "Maintenance, draining, degraded service or at capacity."),
    504: ("GatewayTimeout", "The realtime upstream did not answer in time."),
}
# Answers that always say when to come back.
RETRY_AFTER_REQUIRED = (429, 503)
# What any endpoint may answer whatever it is asked: a wrong method, an oversized body
# (refused before the view), the rate limits and maintenance.
COMMON_ERRORS = (405, 413, 429, 503)


@functools.cache
def document() -> dict[str, Any]:
    """The whole document (built once per process; it depends on code, not settings)."""
    schemas: dict[str, Any] = {}
    for model in (SessionBody, EventsBody, ToolCallBody):
        _add_model(schemas, model)
    schemas.update(_answer_schemas())
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "voiceplatform",
            "version": "1",
            "description": (
                "Sessions, SDP exchange, tool calls and webhooks of the voice server. "
                'Every error is JSON {"error": {"code", "message"}}; clients rely '
                "on the codes."
            ),
        },
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "responses": _error_responses(),
            "securitySchemes": {
                "sessionToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The session_token from POST /session, bound to that "
                    "session and expiring with it.",
                },
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key issued in the admin.",
                },
                "loginCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "sessionid",
                    "description": "A signed-in user's Django session; needs the CSRF token.",
                },
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "METRICS_BEARER_TOKEN, when that is set.",
                },
            },
        },
    }


def _add_model(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template=SCHEMAS + "{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMAS + name}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _header(description: str, *, required: bool = False, schema: dict | None = None) -> dict:
    return {
        "description": description,
        "required": required,
        "schema": schema or {"type": "string"},
    }


def _answer_schemas() -> dict[str, Any]:
    string = {"type": "string"}
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "additionalProperties": False,
                    "properties": {
                        "code": {"type": "string", "enum": [str(code) for code in ErrorCode]},
                        "message": string,
                    },
                }
            },
        },
        "SessionStarted": {
            "type": "object",
            "required": [
                "session_id",
                "session_token",
                "client_secret",
                "model",
                "voice",
                "expires_at",
                "tools",
                "degradation_level",
                "urls",
            ],
            "additionalProperties": False,
            "properties": {
                "session_id": string,
                "session_token": string,
                "client_secret": {
                    "type": "object",
                    "required": ["value", "expires_at"],
                    "additionalProperties": False,
                    "properties": {
                        "value": string,
                        "expires_at": {
                            "type": "integer",
                            "description": "Unix seconds, as the upstream gives it.",
                        },
                    },
                },
                "model": string,
                "voice": {"type": "string", "enum": list(VoiceSession.Voice.values)},
                "expires_at": {"type": "string", "format": "date-time"},
                "tools": {"type": "array", "items": string},
                "degradation_level": {"type": "integer", "minimum": 1, "maximum": 4},
                "urls": {
                    "type": "object",
                    "required": ["sdp", "tools", "events", "end", "recording", "ws"],
                    "additionalProperties": False,
                    "properties": {
                        name: string
                        for name in ("sdp", "tools", "events", "end", "recording", "ws")
                    },
                },
            },
        },
        "SessionList": {
            "type": "object",
            "required": ["sessions", "page", "limit", "next"],
            "additionalProperties": False,
            "properties": {
                "sessions": {"type": "array", "items": _ref("PastSession")},
                "page": {"type": "integer", "minimum": 1},
                "limit": {"type": "integer", "minimum": 1},
                "next": {
                    "type": ["string", "null"],
                    "description": "The next page's URL; null on the last page.",
                },
            },
        },
        "PastSession": {
            "type": "object",
            "required": [
                "session_id",
                "status",
                "started_at",
                "ended_at",
                "duration_seconds",
                "title",
                "resumable",
                "resumed_from",
            ],
            "additionalProperties": False,
            "properties": {
                "session_id": string,
                "status": {"type": "string", "enum": list(VoiceSession.Status.values)},
                "started_at": {"type": "string", "format": "date-time"},
                "ended_at": {"type": ["string", "null"], "format": "date-time"},
                "duration_seconds": {"type": ["number", "null"]},
                "title": {
                    "type": "string",
                    "description": "The start of its first user turn (as stored, redacted); "
                    "empty when nothing was said.",
                },
                "resumable": {
                    "type": "boolean",
                    "description": 'Whether POST /session {"resume": session_id} may '
                    "carry on from it now (a live one must end first).",
                },
                "resumed_from": {"type": ["string", "null"]},
            },
        },
        "EventsReceived": {
            "type": "object",
            "required": ["received", "changed"],
            "additionalProperties": False,
            "properties": {
                "received": {"type": "integer", "minimum": 0},
                "changed": {"type": "integer", "minimum": 0},
            },
        },
        "SessionEnded": {
            "type": "object",
            "required": ["session_id", "status", "ended_at", "duration_seconds", "end_reason"],
            "additionalProperties": False,
            "properties": {
                "session_id": string,
                "status": {"type": "string", "enum": list(VoiceSession.Status.values)},
                "ended_at": {"type": ["string", "null"], "format": "date-time"},
                "duration_seconds": {"type": ["number", "null"]},
                "end_reason": {"type": "string", "enum": ["", *VoiceSession.EndReason.values]},
            },
        },
        "RecordingStored": {
            "type": "object",
            "required": ["session_id", "bytes"],
            "additionalProperties": False,
            "properties": {"session_id": string, "bytes": {"type": "integer", "minimum": 1}},
        },
        "WebhookEvent": {
            "type": "object",
            "description": "A realtime event, e.g. realtime.call.incoming.",
            "required": ["type"],
            "properties": {"type": string, "data": {"type": "object"}},
        },
        "WebhookReceived": {
            "type": "object",
            "required": ["status", "outcome"],
            "additionalProperties": False,
            "properties": {
                "status": {"type": "string", "enum": ["accepted", "duplicate"]},
                "outcome": {"type": ["string", "null"]},
            },
        },
        "ToolList": {
            "type": "object",
            "required": ["tools"],
            "additionalProperties": False,
            "properties": {
                "tools": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type", "name", "description", "parameters"],
                        "properties": {
                            "type": {"const": "function"},
                            "name": string,
                            "description": string,
                            "parameters": {"type": "object"},
                        },
                    },
                }
            },
        },
        "ToolResult": {
            "type": "object",
            "required": ["call_id", "tool", "status", "output", "error"],
            "additionalProperties": False,
            "properties": {
                "call_id": string,
                "tool": string,
                "status": {"type": "string", "enum": ["succeeded", "failed"]},
                "output": string,
                "error": {"type": ["string", "null"]},
            },
        },
        "TaskStarted": {
            "type": "object",
            "required": ["call_id", "tool", "status", "task_id"],
            "additionalProperties": False,
            "properties": {
                "call_id": string,
                "tool": string,
                "status": {"type": "string", "enum": ["running", *TASK_ENDS]},
                "task_id": string,
            },
        },
        "Task": {
            "type": "object",
            "required": [
                "task_id",
                "call_id",
                "tool",
                "kind",
                "agent",
                "summary",
                "status",
                "progress",
                "output",
                "error",
                "cancelled_by",
                "steps",
                "created_at",
                "finished_at",
            ],
            "additionalProperties": False,
            "properties": {
                "task_id": string,
                "call_id": {"type": ["string", "null"]},
                "tool": string,
                "kind": {"type": "string", "enum": ["tool", "agent"]},
                "agent": {"type": ["string", "null"]},
                "summary": string,
                "status": {"type": "string", "enum": ["running", *TASK_ENDS]},
                "progress": string,
                "output": {"type": ["string", "null"]},
                "error": {"type": ["string", "null"]},
                "cancelled_by": {"type": ["string", "null"]},
                "steps": {"type": "integer", "minimum": 0},
                "created_at": {"type": ["string", "null"], "format": "date-time"},
                "finished_at": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "Check": {
            "type": "object",
            "required": ["status", "detail", "ms"],
            "additionalProperties": False,
            "properties": {
                "status": {"type": "string", "enum": [OK, FAILING, DISABLED]},
                "detail": string,
                "ms": {"type": "number", "minimum": 0},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "level", "reasons", "checks"],
            "additionalProperties": False,
            "properties": {
                "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
                "level": {"type": "integer", "minimum": 1, "maximum": 4},
                "reasons": {"type": "array", "items": string},
                "checks": {"type": "object", "additionalProperties": _ref("Check")},
            },
        },
        "Readiness": {
            "type": "object",
            "required": ["status"],
            "additionalProperties": False,
            "properties": {
                "status": {"type": "string", "enum": ["ready", "not_ready"]},
                "reasons": {
                    "type": "array",
                    "items": {"type": "string", "enum": ["starting", "draining", "at capacity"]},
                },
            },
        },
    }


def _error_responses() -> dict[str, Any]:
    responses = {}
    for status, (name, description) in ERRORS.items():
        headers = {}
        if status in RETRY_AFTER_REQUIRED or status in (502, 504):
            headers["Retry-After"] = _header(
                "Seconds to wait before trying again.",
                required=status in RETRY_AFTER_REQUIRED,
                schema={"type": "string", "pattern": "^[0-9]+$"},
            )
        if status == 405:
            headers["Allow"] = _header("The methods this endpoint takes.", required=True)
        responses[name] = _json(
            _ref("Error"), description, **({"headers": headers} if headers else {})
        )
    return responses


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
        for status in sorted({*statuses, *COMMON_ERRORS})
    }


def _path_parameter(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", **schema},
    }


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """A declared query's fields as OpenAPI query parameters (none required)."""
    schema = model.model_json_schema()
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {k: v for k, v in field.items() if k != "title"},
        }
        for name, field in schema["properties"].items()
    ]


SESSION_ID = _path_parameter("session_id", "The session's id, as /session gave it.")
SESSION_HEADER = {
    "name": "X-Voice-Session-Id",
    "in": "header",
    "required": False,
    "description": "The session's id, for load-balancer hashing; must match the token's.",
    "schema": {"type": "string"},
}
TOKEN = [{"sessionToken": []}]
TASK_ID = _path_parameter("task_id", "The task's id, as its start gave it.")
TASK_ENDS = ["succeeded", "failed", "cancelled"]


def _paths() -> dict[str, Any]:
    return {
        "/session": {
            "post": {
                "operationId": "createSession",
                "summary": "Start a voice session: an ephemeral client secret and a session token.",
                "security": [{}, {"apiKey": []}, {"loginCookie": []}],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("SessionBody")}},
                },
                "responses": {
                    "201": _json(
                        _ref("SessionStarted"),
                        "The session, its token and where to take it next.",
                        headers={
                            "X-Voice-Session-Id": _header("The new session's id.", required=True)
                        },
                    ),
                    **_errors(400, 401, 403, 404, 409, 415, 502, 504),
                },
            }
        },
        "/sessions": {
            "get": {
                "operationId": "listSessions",
                "summary": "The caller's own past sessions, newest first, a page at a time; "
                'any of them may be resumed with POST /session {"resume": id}.',
                "security": [{"apiKey": []}, {"loginCookie": []}],
                "parameters": _query_parameters(SessionsQuery),
                "responses": {
                    "200": _json(_ref("SessionList"), "A page of the caller's sessions."),
                    **_errors(400, 401),
                },
            }
        },
        "/sdp": {
            "post": {
                "operationId": "connectCall",
                "summary": "Forward the browser's SDP offer upstream; answer with the SDP answer.",
                "security": TOKEN,
                "parameters": [SESSION_HEADER],
                "requestBody": {
                    "required": True,
                    "content": {"application/sdp": {"schema": {"type": "string"}}},
                },
                "responses": {
                    "201": {
                        "description": "The SDP answer.",
                        "headers": {"X-Call-Id": _header("The upstream call's id.", required=True)},
                        "content": {"application/sdp": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 403, 404, 409, 415, 502, 504),
                },
            }
        },
        "/session/{session_id}/events": {
            "post": {
                "operationId": "relayEvents",
                "summary": "Transcript intake for realtime events the server cannot see; "
                "idempotent by item_id.",
                "security": TOKEN,
                "parameters": [SESSION_ID, SESSION_HEADER],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("EventsBody")}},
                },
                "responses": {
                    "200": _json(
                        _ref("EventsReceived"),
                        "How many events came, how many changed the transcript.",
                    ),
                    **_errors(400, 401, 403, 404, 409, 415),
                },
            }
        },
        "/session/{session_id}/end": {
            "post": {
                "operationId": "endSession",
                "summary": "End the session (idempotent).",
                "security": TOKEN,
                "parameters": [SESSION_ID, SESSION_HEADER],
                "responses": {
                    "200": _json(_ref("SessionEnded"), "The session as it ended."),
                    **_errors(401, 403, 404),
                },
            }
        },
        "/session/{session_id}/recording": {
            "post": {
                "operationId": "uploadRecording",
                "summary": "Store the session's audio recording (once).",
                "security": TOKEN,
                "parameters": [SESSION_ID, SESSION_HEADER],
                "requestBody": {
                    "required": True,
                    "content": {
                        content_type: {"schema": {"type": "string", "format": "binary"}}
                        for content_type in RECORDING_TYPES
                    },
                },
                "responses": {
                    "201": _json(_ref("RecordingStored"), "The recording is stored."),
                    **_errors(400, 401, 403, 404, 409, 415),
                },
            }
        },
        "/webhook/{provider}": {
            "post": {
                "operationId": "receiveWebhook",
                "summary": "A signed webhook (Standard Webhooks); once per webhook-id.",
                "security": [{}],
                "parameters": [
                    _path_parameter("provider", "Who sends it.", enum=["openai"]),
                    *(
                        {
                            "name": name,
                            "in": "header",
                            "required": True,
                            "description": description,
                            "schema": {"type": "string"},
                        }
                        for name, description in (
                            ("webhook-id", "The event's id; a repeat is a duplicate."),
                            ("webhook-timestamp", "Unix seconds; within 5 minutes of now."),
                            ("webhook-signature", "Space-separated v1,<base64 HMAC> entries."),
                        )
                    ),
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("WebhookEvent")}},
                },
                "responses": {
                    "200": _json(
                        _ref("WebhookReceived"), "Accepted, or a duplicate of one that was."
                    ),
                    **_errors(400, 404, 415, 502, 504),
                },
            }
        },
        "/tools/": {
            "get": {
                "operationId": "listTools",
                "summary": "The tools this session may use, as function definitions.",
                "security": TOKEN,
                "parameters": [SESSION_HEADER],
                "responses": {
                    "200": _json(_ref("ToolList"), "The session's tools."),
                    **_errors(401, 403, 404),
                },
            }
        },
        "/tools/{name}": {
            "post": {
                "operationId": "runTool",
                "summary": "Run a tool call for the session, once per call_id.",
                "security": TOKEN,
                "parameters": [_path_parameter("name", "The tool's name."), SESSION_HEADER],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ToolCallBody")}},
                },
                "responses": {
                    "200": _json(
                        _ref("ToolResult"),
                        "The call's result; a tool's own failure is status failed.",
                    ),
                    "202": _json(
                        _ref("TaskStarted"),
                        "The call goes on in the background as a task (long-running, "
                        "asked to with detach, or not done within a few seconds).",
                    ),
                    **_errors(400, 401, 403, 404, 409, 415),
                },
            }
        },
        "/session/{session_id}/tasks/{task_id}": {
            "get": {
                "operationId": "readTask",
                "summary": "A background task of the session: status, progress, result.",
                "security": TOKEN,
                "parameters": [SESSION_ID, TASK_ID, SESSION_HEADER],
                "responses": {
                    "200": _json(_ref("Task"), "The task as it stands."),
                    **_errors(401, 403, 404),
                },
            }
        },
        "/session/{session_id}/tasks/{task_id}/cancel": {
            "post": {
                "operationId": "cancelTask",
                "summary": "Stop a running task (gracefully, then by force).",
                "security": TOKEN,
                "parameters": [SESSION_ID, TASK_ID, SESSION_HEADER],
                "responses": {
                    "202": _json(_ref("Task"), "Asked to stop; it ends cancelled."),
                    **_errors(401, 403, 404, 409),
                },
            }
        },
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Every check, the service level and a status.",
                "security": [{}],
                "responses": {
                    "200": _json(_ref("Health"), "Healthy or degraded."),
                    "503": _json(
                        _ref("Health"),
                        "Unhealthy: new conversations cannot start.",
                        headers={"Retry-After": _header("Seconds.", required=True)},
                    ),
                    "405": {"$ref": "#/components/responses/MethodNotAllowed"},
                },
            }
        },
        "/health/live": {
            "get": {
                "operationId": "healthLive",
                "summary": "The process answers.",
                "security": [{}],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status"],
                            "additionalProperties": False,
                            "properties": {"status": {"const": "alive"}},
                        },
                        "Alive.",
                    ),
                    "405": {"$ref": "#/components/responses/MethodNotAllowed"},
                },
            }
        },
        "/health/ready": {
            "get": {
                "operationId": "healthReady",
                "summary": "Whether to send this pod new sessions.",
                "description": (
                    "Only what is local to this pod decides: starting, draining or at "
                    "capacity. A shared dependency (Redis, PostgreSQL, OpenAI, the workers) "
                    "never makes a pod unready, since every pod would lose it together; "
                    "those show on /health and in the service level."
                ),
                "security": [{}],
                "responses": {
                    "200": _json(_ref("Readiness"), "Ready."),
                    "503": _json(
                        _ref("Readiness"),
                        "Not ready: starting, draining or at capacity.",
                        headers={"Retry-After": _header("Seconds.", required=True)},
                    ),
                    "405": {"$ref": "#/components/responses/MethodNotAllowed"},
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus exposition of this process.",
                "security": [{}, {"metricsToken": []}],
                "responses": {
                    "200": {
                        "description": "The metrics, in Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "405": {"$ref": "#/components/responses/MethodNotAllowed"},
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "security": [{}],
                "responses": {
                    "200": _json(
                        {"type": "object", "required": ["openapi", "paths"]},
                        "The OpenAPI document.",
                    ),
                    "405": {"$ref": "#/components/responses/MethodNotAllowed"},
                },
            }
        },
    }


@functools.cache
def document_bytes() -> bytes:
    """The document as served."""
    return json.dumps(document(), separators=(",", ":")).encode()
