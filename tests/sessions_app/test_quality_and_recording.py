"""Audio-quality stats from the client, and the optional recording upload."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.core.files.storage import FileSystemStorage
from django.utils import timezone

from tests.factories import bearer

pytestmark = pytest.mark.django_db(transaction=True)

WEBM = b"\x1a\x45\xdf\xa3" + b"\x00" * 64


async def _post_stats(api, session, *stats):
    events = [{"type": "client.stats", "stats": item} for item in stats]
    return await api.post(
        f"/session/{session.pk}/events",
        {"events": events},
        content_type="application/json",
        headers=bearer(session),
    )


async def test_stats_are_aggregated_on_the_session_and_exported(api, make_session):
    from prometheus_client import REGISTRY

    session = await make_session(status="active")
    before = REGISTRY.get_sample_value("voice_webrtc_rtt_seconds_count") or 0

    response = await _post_stats(
        api,
        session,
        {
            "rtt_seconds": 0.02,
            "jitter_seconds": 0.004,
            "packets_lost": 0,
            "packets_received": 500,
            "audio_level": 0.1,
        },
        {
            "rtt_seconds": 0.04,
            "jitter_seconds": 0.002,
            "packets_lost": 10,
            "packets_received": 990,
            "audio_level": 0.3,
        },
    )

    assert response.status_code == 200
    await session.arefresh_from_db()
    stats = session.audio_stats
    assert stats["samples"] == 2
    assert stats["rtt_seconds_avg"] == pytest.approx(0.03)
    assert stats["rtt_seconds_max"] == 0.04
    assert stats["loss_ratio"] == pytest.approx(0.01)
    assert REGISTRY.get_sample_value("voice_webrtc_rtt_seconds_count") == before + 2


async def test_nonsense_stats_are_ignored(api, make_session):
    session = await make_session(status="active")

    response = await _post_stats(
        api,
        session,
        {"rtt_seconds": -1, "jitter_seconds": "x", "audio_level": 7, "packets_received": True},
    )

    assert response.status_code == 200
    await session.arefresh_from_db()
    assert session.audio_stats == {}


async def test_a_recording_is_stored_and_linked_to_its_session(api, make_session):
    session = await make_session(status="ended", ended_at=timezone.now())

    response = await api.post(
        f"/session/{session.pk}/recording",
        WEBM,
        content_type="audio/webm;codecs=opus",
        headers=bearer(session),
    )
    again = await api.post(
        f"/session/{session.pk}/recording", WEBM, content_type="audio/webm", headers=bearer(session)
    )

    assert response.status_code == 201 and response.json()["bytes"] == len(WEBM)
    assert again.status_code == 409
    await session.arefresh_from_db()
    assert session.recording.name.endswith(f"{session.pk}.webm")
    assert await sync_to_async(session.recording.read)() == WEBM


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (WEBM, "video/mp4", 415, "unsupported_media_type"),
        (b"not audio at all", "audio/webm", 400, "invalid_recording"),
        (b"", "audio/webm", 400, "invalid_recording"),
        (b"OggS" + b"\x00" * 10, "audio/webm", 400, "invalid_recording"),
    ],
)
async def test_a_bad_recording_is_refused(api, body, content_type, status, code, make_session):
    session = await make_session(status="active")

    response = await api.post(
        f"/session/{session.pk}/recording", body, content_type=content_type, headers=bearer(session)
    )

    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_a_recording_too_large_is_413(api, settings, make_session):
    settings.RECORDING_MAX_BYTES = 1000
    session = await make_session(status="active")

    response = await api.post(
        f"/session/{session.pk}/recording",
        WEBM + b"\x00" * 2000,
        content_type="audio/webm",
        headers=bearer(session),
    )

    assert response.status_code == 413


async def test_a_recording_long_after_the_end_is_refused(api, make_session):
    session = await make_session(status="ended", ended_at=timezone.now() - timedelta(hours=1))

    response = await api.post(
        f"/session/{session.pk}/recording", WEBM, content_type="audio/webm", headers=bearer(session)
    )

    assert response.status_code == 409


async def _upload(api, session, audio=WEBM):
    return await api.post(
        f"/session/{session.pk}/recording",
        audio,
        content_type="audio/webm",
        headers=bearer(session),
    )


async def test_uploads_racing_for_one_session_store_one_recording_and_nothing_else(
    api, settings, tmp_path, make_session
):
    settings.MEDIA_ROOT = tmp_path
    session = await make_session(status="active")

    responses = await asyncio.gather(*(_upload(api, session, WEBM + bytes([n])) for n in range(4)))

    assert sorted(response.status_code for response in responses) == [201, 409, 409, 409]
    refused = [
        response.json()["error"]["code"] for response in responses if response.status_code == 409
    ]
    assert refused == ["recording_exists"] * 3
    await session.arefresh_from_db()
    stored = sorted(
        str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file()
    )
    assert stored == [session.recording.name]


async def test_a_recording_that_could_not_be_stored_may_be_sent_again(
    api, settings, tmp_path, make_session, monkeypatch
):
    settings.MEDIA_ROOT = tmp_path
    session = await make_session(status="active")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(FileSystemStorage, "save", full)
        with pytest.raises(OSError):
            await _upload(api, session)
    again = await _upload(api, session)

    assert again.status_code == 201
    await session.arefresh_from_db()
    assert await sync_to_async(session.recording.read)() == WEBM


async def test_a_recording_is_spooled_to_a_file_not_read_into_memory(
    api, settings, tmp_path, make_session
):
    settings.MEDIA_ROOT = tmp_path
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024  # what a view may read into memory
    session = await make_session(status="active")
    audio = WEBM + bytes(256 * 1024)

    response = await _upload(api, session, audio)

    assert response.status_code == 201 and response.json()["bytes"] == len(audio)
    await session.arefresh_from_db()
    assert await sync_to_async(session.recording.read)() == audio
