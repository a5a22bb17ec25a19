"""Request bodies are capped per route before Django reads them: 413 as soon as the
declared or streamed size passes the cap, without pulling the rest."""

from __future__ import annotations

import asyncio
import json

import pytest

from sessions_app import tokens
from tests.factories import VoiceSessionFactory, async_create

CHUNK = 64 * 1024


class Upload:
    """An ASGI receive() streaming a body in chunks, counting what the app pulled."""

    def __init__(self, total: int, head: bytes = b"") -> None:
        self.total = total
        self.head = head
        self.pulled = 0

    async def __call__(self) -> dict:
        if self.pulled >= self.total:
            await asyncio.Event().wait()  # as a server does: until the client goes away
        size = min(CHUNK, self.total - self.pulled)
        body = (self.head + b"\0" * size)[:size] if self.pulled == 0 else b"\0" * size
        self.pulled += size
        return {"type": "http.request", "body": body, "more_body": self.pulled < self.total}


async def _post(path: str, upload: Upload, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    from voiceplatform.asgi import application

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            *((name.lower().encode(), value.encode()) for name, value in headers.items()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await application(scope, upload, send)
    start = next(message for message in sent if message["type"] == "http.response.start")
    body = b"".join(message.get("body", b"") for message in sent[1:])
    return start["status"], dict(start["headers"]), body


def _token(session_id: str) -> dict[str, str]:
    return {"authorization": f"Bearer {tokens.issue(session_id)}"}


@pytest.mark.parametrize(
    ("path", "content_type", "cap"),
    [
        ("/session", "application/json", "JSON_MAX_BYTES"),
        ("/tools/bash", "application/json", "JSON_MAX_BYTES"),
        ("/sdp", "application/sdp", "SDP_MAX_BYTES"),
        ("/session/sess_x/recording", "audio/ogg", "RECORDING_MAX_BYTES"),
        ("/admin/login/", "application/x-www-form-urlencoded", "REQUEST_MAX_BYTES"),
    ],
)
async def test_it_stops_reading_a_chunked_body_past_the_cap(settings, path, content_type, cap):
    limit = getattr(settings, cap)
    upload = Upload(total=300 * 1024 * 1024)

    status, headers, body = await _post(
        path, upload, {"content-type": content_type, **_token("sess_x")}
    )

    assert status == 413 and headers[b"content-type"] == b"application/json"
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert limit < upload.pulled <= limit + CHUNK  # the rest was never pulled


async def test_it_refuses_a_declared_length_past_the_cap_without_reading():
    upload = Upload(total=300 * 1024 * 1024)

    status, _, body = await _post(
        "/session",
        upload,
        {"content-type": "application/json", "content-length": str(upload.total)},
    )

    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
    assert upload.pulled == 0


@pytest.mark.django_db(transaction=True)
async def test_a_body_within_its_routes_cap_reaches_the_view(settings, tmp_path):
    # Past the JSON cap, within the recording cap: the view reads it all and stores it.
    settings.MEDIA_ROOT = tmp_path
    session = await async_create(VoiceSessionFactory)(status="active")
    upload = Upload(total=settings.JSON_MAX_BYTES * 4, head=b"OggS")

    status, _, body = await _post(
        f"/session/{session.pk}/recording",
        upload,
        {"content-type": "audio/ogg", **_token(session.pk)},
    )

    assert upload.pulled == upload.total
    assert status == 201 and json.loads(body)["bytes"] == upload.total
    await session.arefresh_from_db()
    assert session.recording.size == upload.total


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("authorization", "status", "code"),
    [
        ({}, 401, "missing_token"),
        ({"authorization": "Bearer forged.token.value"}, 401, "invalid_token"),
        ("another session's", 403, "wrong_session"),
    ],
)
async def test_an_upload_the_caller_may_not_make_is_refused_before_any_body_is_read(
    settings, authorization, status, code, declared
):
    if authorization == "another session's":  # minted now: a token has a lifetime
        authorization = _token("sess_other")
    upload = Upload(total=settings.RECORDING_MAX_BYTES)
    length = {"content-length": str(upload.total)} if declared else {}

    answered, _, body = await _post(
        "/session/sess_x/recording",
        upload,
        {"content-type": "audio/ogg", **length, **authorization},
    )

    assert answered == status and json.loads(body)["error"]["code"] == code
    assert upload.pulled == 0


@pytest.mark.django_db(transaction=True)
async def test_a_small_chunked_session_request_still_works(http, simulator):
    body = json.dumps({"voice": "cedar", "instructions": "Be terse."}).encode()

    async def chunks():
        for start in range(0, len(body), 7):
            yield body[start : start + 7]

    response = await http.post(
        "/session", content=chunks(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 201 and response.json()["session_id"].startswith("sess_")
