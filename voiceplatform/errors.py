"""The one JSON error shape: raise an ApiError anywhere on a request path.

Clients rely on the codes, so they are enumerated here, once (ErrorCode); an ApiError
with a code outside the list fails where it is raised, not in a client.
"""

from __future__ import annotations

from enum import StrEnum

from django.http import JsonResponse


class ErrorCode(StrEnum):
    # The request itself
    BAD_REQUEST = "bad_request"
    INVALID_JSON = "invalid_json"
    UNKNOWN_FIELD = "unknown_field"
    MISSING_FIELD = "missing_field"
    INVALID_INSTRUCTIONS = "invalid_instructions"
    INVALID_VOICE = "invalid_voice"
    INVALID_EVENTS = "invalid_events"
    INVALID_CALL_ID = "invalid_call_id"
    INVALID_ARGUMENTS = "invalid_arguments"
    INVALID_SDP = "invalid_sdp"
    INVALID_RECORDING = "invalid_recording"
    INVALID_WEBHOOK = "invalid_webhook"
    INVALID_SIGNATURE = "invalid_signature"
    INVALID_LEVEL = "invalid_level"
    INVALID_REASON = "invalid_reason"
    INVALID_HOURS = "invalid_hours"
    INVALID_RESUME = "invalid_resume"
    INVALID_PAGE = "invalid_page"
    INVALID_LIMIT = "invalid_limit"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RANGE_NOT_SATISFIABLE = "range_not_satisfiable"
    # Who is asking
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    LOGIN_REQUIRED = "login_required"
    CSRF_FAILED = "csrf_failed"
    INVALID_API_KEY = "invalid_api_key"
    MISSING_TOKEN = "missing_token"  # noqa: S105 (a code, not a secret)
    INVALID_TOKEN = "invalid_token"  # noqa: S105 (a code, not a secret)
    TOKEN_EXPIRED = "token_expired"  # noqa: S105 (a code, not a secret)
    WRONG_SESSION = "wrong_session"
    # What it names
    NOT_FOUND = "not_found"
    SESSION_NOT_FOUND = "session_not_found"
    UNKNOWN_TOOL = "unknown_tool"
    UNKNOWN_PROVIDER = "unknown_provider"
    UNKNOWN_BREAKER = "unknown_breaker"
    TOOL_NOT_ALLOWED = "tool_not_allowed"
    UNKNOWN_TASK = "unknown_task"
    # The state it finds
    CONFLICT = "conflict"
    SESSION_ENDED = "session_ended"
    SESSION_LIVE = "session_live"
    ALREADY_CONNECTED = "already_connected"
    RECORDING_EXISTS = "recording_exists"
    CALL_ID_REUSED = "call_id_reused"
    UNKNOWN_CALL = "unknown_call"
    TASK_FINISHED = "task_finished"
    # Limits and service levels
    RATE_LIMITED = "rate_limited"
    TOO_MANY_LIVE_SESSIONS = "too_many_live_sessions"
    TRANSCRIPT_FULL = "transcript_full"
    TOO_MANY_RUNNING = "too_many_running"
    ARGUMENTS_TOO_LARGE = "arguments_too_large"
    TOOL_ARGUMENTS_FULL = "tool_arguments_full"
    AT_CAPACITY = "at_capacity"
    MAINTENANCE = "maintenance"
    DRAINING = "draining"
    TOOLS_UNAVAILABLE = "tools_unavailable"
    SERVICE_UNAVAILABLE = "service_unavailable"
    INTERNAL_ERROR = "internal_error"
    # The realtime upstream
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_RATE_LIMITED = "upstream_rate_limited"
    UPSTREAM_REFUSED = "upstream_refused"
    UPSTREAM_BAD_ANSWER = "upstream_bad_answer"
    UPSTREAM_CIRCUIT_OPEN = "upstream_circuit_open"
    OFFER_REJECTED = "offer_rejected"


class ApiError(Exception):
    status = 400
    code = ErrorCode.BAD_REQUEST

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = ErrorCode(code or self.code)
        self.status = status or self.status
        self.retry_after = retry_after
        self.headers = headers or {}


class BadRequest(ApiError):
    status, code = 400, ErrorCode.BAD_REQUEST


class Unauthorized(ApiError):
    status, code = 401, ErrorCode.UNAUTHORIZED


class Forbidden(ApiError):
    status, code = 403, ErrorCode.FORBIDDEN


class NotFound(ApiError):
    status, code = 404, ErrorCode.NOT_FOUND


class MethodNotAllowed(ApiError):
    status, code = 405, ErrorCode.METHOD_NOT_ALLOWED


class Conflict(ApiError):
    status, code = 409, ErrorCode.CONFLICT


class PayloadTooLarge(ApiError):
    status, code = 413, ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(ApiError):
    status, code = 415, ErrorCode.UNSUPPORTED_MEDIA_TYPE


class TooManyRequests(ApiError):
    status, code = 429, ErrorCode.RATE_LIMITED


class ServiceUnavailable(ApiError):
    status, code = 503, ErrorCode.SERVICE_UNAVAILABLE


def error_response(
    status: int,
    code: ErrorCode,
    message: str,
    *,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    response = JsonResponse({"error": {"code": str(code), "message": message}}, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(max(1, int(retry_after)))
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def render(error: ApiError) -> JsonResponse:
    return error_response(
        error.status,
        error.code,
        error.message,
        retry_after=error.retry_after,
        headers=error.headers,
    )
