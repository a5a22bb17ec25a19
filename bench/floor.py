"""The floor: a bare ASGI passthrough of /session and /sdp to the realtime upstream
with one pooled httpx client, nothing else. What forwarding two small HTTP requests
costs on this machine, for the benchmark to compare the server against.

    FLOOR_UPSTREAM=http://127.0.0.1:8765/simulator python -m daphne bench.floor:app
"""

from __future__ import annotations

import json
import os

import httpx

UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:8765/simulator").rstrip("/")
API_KEY = os.environ.get("FLOOR_API_KEY", "sk-sim-local")
SESSION = {"session": {"type": "realtime", "model": "gpt-realtime"}}

_client: httpx.AsyncClient | None = None


def client() -> httpx.AsyncClient:
    global _client
    if _client is None:
        _client = httpx.AsyncClient(
            base_url=UPSTREAM, timeout=30, limits=httpx.Limits(max_keepalive_connections=100)
        )
    return _client


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


def _bearer(scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1").partition(" ")[2]
    return ""


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body = await _body(receive)
    route = (scope["method"], scope["path"])
    if route == ("GET", "/health/live"):
        await _answer(send, 200, b'{"status":"alive"}', b"application/json")
    elif route == ("POST", "/session"):
        upstream = await client().post(
            "/v1/realtime/client_secrets",
            json=SESSION,
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        secret = upstream.json()
        answer = {"value": secret.get("value"), "expires_at": secret.get("expires_at")}
        status = 201 if upstream.status_code == 200 else upstream.status_code
        await _answer(send, status, json.dumps(answer).encode(), b"application/json")
    elif route == ("POST", "/sdp"):
        upstream = await client().post(
            "/v1/realtime/calls",
            content=body,
            headers={
                "Content-Type": "application/sdp",
                "Authorization": f"Bearer {_bearer(scope)}",
            },
        )
        call_id = upstream.headers.get("location", "").rsplit("/", 1)[-1]
        await _answer(
            send,
            upstream.status_code,
            upstream.content,
            b"application/sdp",
            [(b"x-call-id", call_id.encode())],
        )
    else:
        await _answer(send, 404, b'{"error":"not found"}', b"application/json")
