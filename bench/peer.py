"""The peer: amplifier-voice's voice-server handler shape, as an ASGI app, for the
benchmark to show next to the floor and us. Each /session and /sdp call opens a new
httpx.AsyncClient (no pooling: a new connection, and the client's own set-up, every
time), /session builds its session config per request (instructions and function
tools), renders it as indented JSON for a debug log line (an f-string: rendered even
when debug is off), and reshapes the upstream's answer to {"client_secret": {"value"}}.
/sdp forwards the offer with the caller's Authorization header and answers the SDP with
200. Written here from that shape, not taken from its code.

    PEER_UPSTREAM=http://127.0.0.1:8765/simulator python -m daphne bench.peer:app

Unlike the original, /sdp also says the call's id (X-Call-Id, from the upstream's
Location) so that the benchmark can hang its calls up afterwards, as it does the
floor's; and a non-2xx upstream answer is passed on as a JSON error.
"""

from __future__ import annotations

import json
import logging
import os

import httpx

UPSTREAM = os.environ.get("PEER_UPSTREAM", "http://127.0.0.1:8765/simulator").rstrip("/")
API_KEY = os.environ.get("PEER_API_KEY", "sk-sim-local")
MODEL = "gpt-realtime"
INSTRUCTIONS = (
    "You are a helpful voice assistant. Keep answers short and conversational; "
    "use the tools when the user asks about files or the web."
)

log = logging.getLogger("bench.peer")


def _tools() -> list[dict]:
    """The function tools a session is offered, described afresh for each session (the
    original asks its tool bridge each time)."""
    return [
        {
            "type": "function",
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {argument: {"type": "string", "description": argument}},
                "required": [argument],
            },
        }
        for name, description, argument in (
            ("read_file", "Read a file of the workspace.", "file_path"),
            ("web_fetch", "Fetch a web page and return its text.", "url"),
            ("bash", "Run a shell command in the workspace.", "command"),
        )
    ]


async def _body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send, status: int, body: bytes, content_type: bytes, extra=()) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + list(extra)})
    await send({"type": "http.response.body", "body": body})


def _header(scope, wanted: bytes) -> str:
    for name, value in scope["headers"]:
        if name == wanted:
            return value.decode("latin-1")
    return ""


async def _error(send, status: int, detail: str) -> None:
    await _answer(send, status, json.dumps({"detail": detail}).encode(), b"application/json")


async def create_session(send, body: bytes) -> None:
    voice = "ash"
    if body.strip():
        try:
            voice = json.loads(body).get("voice") or voice
        except (ValueError, AttributeError):
            await _error(send, 400, "The body is not a JSON object.")
            return
    config = {
        "session": {
            "type": "realtime",
            "model": MODEL,
            "instructions": INSTRUCTIONS,
            "tools": _tools(),
            "audio": {"output": {"voice": voice}},
        }
    }
    log.debug(f"session config: {json.dumps(config, indent=2)}")  # noqa: G004 (its shape)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=30.0) as client:
        upstream = await client.post(
            f"{UPSTREAM}/v1/realtime/client_secrets", json=config, headers=headers
        )
    if upstream.status_code != 200:
        await _error(send, upstream.status_code, upstream.text)
        return
    secret = upstream.json().get("value", "unknown")
    answer = {"client_secret": {"value": secret}}
    await _answer(send, 200, json.dumps(answer).encode(), b"application/json")


async def exchange_sdp(send, scope, offer: bytes) -> None:
    headers = {"Authorization": _header(scope, b"authorization"), "Content-Type": "application/sdp"}
    async with httpx.AsyncClient(timeout=30.0) as client:
        upstream = await client.post(
            f"{UPSTREAM}/v1/realtime/calls", content=offer, headers=headers
        )
    if not upstream.is_success:
        await _error(send, upstream.status_code, upstream.text)
        return
    call_id = upstream.headers.get("location", "").rsplit("/", 1)[-1]
    await _answer(
        send,
        200,
        upstream.text.encode(),
        b"application/sdp",
        [(b"x-call-id", call_id.encode())],
    )


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body = await _body(receive)
    route = (scope["method"], scope["path"])
    if route == ("GET", "/health/live"):
        await _answer(send, 200, b'{"status":"alive"}', b"application/json")
    elif route == ("POST", "/session"):
        await create_session(send, body)
    elif route == ("POST", "/sdp"):
        await exchange_sdp(send, scope, body)
    else:
        await _error(send, 404, "Not Found")
