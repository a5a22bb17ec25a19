"""The one client of the realtime upstream (OpenAI, or the simulator in its place).

Built on the official SDK over our own httpx2 client (timeouts, connection limits).
Every upstream failure becomes an UpstreamError: a JSON 400/502/503/504 with
Retry-After for our caller, never the upstream body and never our key.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
import openai
import structlog
from asgiref.sync import sync_to_async
from django.conf import settings

from ops_app import breakers
from ops_app.metrics import count_error, voice_openai_latency_seconds
from voiceplatform.errors import ApiError, ErrorCode

log = structlog.get_logger(__name__)

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
    weakref.WeakKeyDictionary()
)


class UpstreamError(ApiError):
    status, code = 502, ErrorCode.UPSTREAM_ERROR


def api_key() -> str:
    return settings.OPENAI_API_KEY or settings.SIMULATOR_API_KEY


class _OnePieceBodies(httpx2.AsyncHTTPTransport):
    """Sends each request body in one piece. The SDK posts an SDP offer as multipart
    form data, which httpx2 streams a part header and a part at a time: a dozen small
    writes, each a system call and a wake-up at the other end, several milliseconds of
    CPU on a busy machine. The bodies we send are small (an offer is at most
    SDP_MAX_BYTES)."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        return await super().handle_async_request(request)


def client() -> openai.AsyncOpenAI:
    """The SDK client of the running event loop (an httpx2 pool is bound to its loop)."""
    loop = asyncio.get_running_loop()
    existing = _clients.get(loop)
    if existing is not None:
        return existing
    http = httpx2.AsyncClient(
        timeout=httpx2.Timeout(settings.OPENAI_TIMEOUT_SECONDS, connect=5.0),
        transport=_OnePieceBodies(
            limits=httpx2.Limits(max_connections=100, max_keepalive_connections=20)
        ),
    )
    created = openai.AsyncOpenAI(
        api_key=api_key(),
        base_url=settings.OPENAI_BASE_URL.rstrip("/") + "/v1",
        http_client=http,
        max_retries=settings.OPENAI_MAX_RETRIES,
        timeout=settings.OPENAI_TIMEOUT_SECONDS,
    )
    _clients[loop] = created
    return created


async def close_client() -> None:
    """Closes the running loop's client (for short-lived loops, e.g. in Celery)."""
    existing = _clients.pop(asyncio.get_running_loop(), None)
    if existing is not None:
        await existing.close()


def session_config(
    *, model: str, voice: str, instructions: str, tools: list[dict] | None = None
) -> dict:
    """The realtime session configuration we send upstream (GA shape)."""
    return {
        "type": "realtime",
        "model": model,
        "instructions": instructions,
        "audio": {
            "input": {
                # Input transcription is how the user's speech reaches history.
                "transcription": {"model": settings.OPENAI_TRANSCRIPTION_MODEL},
                "turn_detection": {"type": "server_vad"},
            },
            "output": {"voice": voice},
        },
        "tools": tools or [],
    }


def _retry_after(headers: httpx2.Headers | None, default: int) -> int:
    if headers is not None:
        millis = headers.get("retry-after-ms")
        seconds = headers.get("retry-after")
        try:
            if millis:
                return max(1, math.ceil(float(millis) / 1000))
            if seconds:
                return max(1, math.ceil(float(seconds)))
        except ValueError:
            pass
    return default


def _translate(operation: str, exc: Exception) -> UpstreamError:
    if isinstance(exc, (openai.APITimeoutError, TimeoutError)):
        return UpstreamError(
            "The voice service took too long to answer.",
            status=504,
            code=ErrorCode.UPSTREAM_TIMEOUT,
            retry_after=5,
        )
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamError(
            "The voice service cannot be reached.",
            status=502,
            code=ErrorCode.UPSTREAM_UNAVAILABLE,
            retry_after=5,
        )
    if not isinstance(exc, openai.APIStatusError):  # e.g. a response we cannot parse
        return UpstreamError(
            "The voice service gave an unusable answer.",
            code=ErrorCode.UPSTREAM_BAD_ANSWER,
            retry_after=5,
        )
    status = exc.status_code
    if status == 429:
        return UpstreamError(
            "The voice service is busy; try again shortly.",
            status=503,
            code=ErrorCode.UPSTREAM_RATE_LIMITED,
            retry_after=_retry_after(exc.response.headers, 1),
        )
    if status >= 500:
        return UpstreamError(
            "The voice service failed to answer.",
            status=502,
            code=ErrorCode.UPSTREAM_ERROR,
            retry_after=_retry_after(exc.response.headers, 5),
        )
    if operation == "create_call" and status in (400, 422):
        return UpstreamError(
            "The voice service rejected the SDP offer.", status=400, code=ErrorCode.OFFER_REJECTED
        )
    # Anything else (401, 403, 404 ...) is a problem on our side, not the caller's.
    return UpstreamError(
        "The voice service refused the request.",
        status=502,
        code=ErrorCode.UPSTREAM_REFUSED,
        retry_after=30,
    )


# Failures that say the upstream itself is in trouble, and so count against its breaker;
# a refusal of what we sent (4xx) or a rate limit (429, retried with backoff) does not.
_BREAKER_CODES = frozenset(
    {
        ErrorCode.UPSTREAM_TIMEOUT,
        ErrorCode.UPSTREAM_UNAVAILABLE,
        ErrorCode.UPSTREAM_ERROR,
        ErrorCode.UPSTREAM_BAD_ANSWER,
    }
)


async def _breaker(action, *args):
    return await sync_to_async(action, thread_sensitive=False)(breakers.openai(), *args)


@asynccontextmanager
async def _upstream(operation: str, *, guarded: bool = True) -> AsyncIterator[None]:
    """Times one operation, caps its total time, and translates its failures. While the
    OpenAI breaker is open, a guarded operation (one that starts something) is refused
    at once with 503 instead of waiting on a failing upstream; cleanup still tries."""
    reading = await breakers.aread(breakers.openai()) if guarded else None
    if reading is not None and reading.open:
        count_error("openai", "circuit_open")
        raise UpstreamError(
            "The voice service is failing right now; try again shortly.",
            status=503,
            code=ErrorCode.UPSTREAM_CIRCUIT_OPEN,
            retry_after=await _breaker(breakers.seconds_until_trial),
        )
    started = time.perf_counter()
    try:
        async with asyncio.timeout(settings.OPENAI_TOTAL_TIMEOUT_SECONDS):
            yield
    except (openai.APIError, TimeoutError, UpstreamError) as exc:
        error = exc if isinstance(exc, UpstreamError) else _translate(operation, exc)
        await breakers.arecord(breakers.openai(), error.code not in _BREAKER_CODES)
        response = getattr(exc, "response", None)
        log.warning(
            "upstream_failed",
            operation=operation,
            upstream_status=getattr(exc, "status_code", None),
            upstream_request_id=response.headers.get("x-request-id") if response else None,
            status=error.status,
            code=error.code,
        )
        count_error("openai", error.code)
        raise error from None
    else:
        # After a clean reading (the usual case) a success has nothing to reset.
        if reading is None or not reading.clean:
            await breakers.arecord(breakers.openai(), True)
    finally:
        voice_openai_latency_seconds.labels(operation=operation).observe(
            time.perf_counter() - started
        )


async def create_client_secret(config: dict) -> dict:
    """Mints an ephemeral client secret: {"value", "expires_at", "session_id"}.

    Through the SDK's plain `post` (its documented door for any endpoint: the same
    auth, retries and errors) with the body as we built it, not its typed method: that
    one walks the body against its TypedDicts and builds typed models of the answer,
    which cost more CPU than all the rest of the call, and change nothing here."""
    async with _upstream("client_secrets"):
        response = await client().post(
            "/realtime/client_secrets",
            body={
                "expires_after": {
                    "anchor": "created_at",
                    "seconds": settings.OPENAI_CLIENT_SECRET_TTL_SECONDS,
                },
                "session": config,
            },
            cast_to=httpx2.Response,
        )
        secret = _json_object(response)
        if not isinstance(secret.get("value"), str) or not secret["value"]:
            raise openai.APIResponseValidationError(
                response, secret, message="The client secret has no value."
            )
    session = secret.get("session")
    session_id = session.get("id") if isinstance(session, dict) else None
    return {
        "value": secret["value"],
        "expires_at": secret.get("expires_at"),
        "session_id": session_id if isinstance(session_id, str) else "",
    }


def _json_object(response: httpx2.Response) -> dict:
    try:
        found = response.json()
    except ValueError:
        found = None
    if not isinstance(found, dict):
        raise openai.APIResponseValidationError(
            response, found, message="The answer is not a JSON object."
        )
    return found


async def create_call(sdp: str, config: dict) -> tuple[str, str]:
    """Posts an SDP offer; returns (answer SDP, call id from the Location header)."""
    async with _upstream("create_call"):
        raw = await client().realtime.calls.with_raw_response.create(sdp=sdp, session=config)
    location = raw.headers.get("location", "")
    call_id = location.rstrip("/").rsplit("/", 1)[-1]
    answer = raw.http_response.text
    if not call_id.startswith("rtc_") or not answer.startswith("v=0"):
        raise UpstreamError(
            "The voice service gave an unusable answer.",
            code=ErrorCode.UPSTREAM_BAD_ANSWER,
            retry_after=5,
        )
    return answer, call_id


async def hangup(call_id: str) -> None:
    async with _upstream("hangup", guarded=False):
        await client().realtime.calls.hangup(call_id)


async def accept_call(call_id: str, config: dict) -> None:
    async with _upstream("accept_call"):
        await client().realtime.calls.accept(call_id, **config)


async def reject_call(call_id: str, status_code: int = 603) -> None:
    async with _upstream("reject_call", guarded=False):
        await client().realtime.calls.reject(call_id, status_code=status_code)


def sideband(call_id: str):
    """The server-side control connection on a call (an async context manager)."""
    return client().realtime.connect(call_id=call_id)
