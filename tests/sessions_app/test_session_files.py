"""GET /media/<path>: a session's transcript export or recording, for staff who may
view sessions, and nothing else under MEDIA_ROOT."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from tests.factories import VoiceSessionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def exported():
    session = VoiceSessionFactory(status="ended")
    session.transcript_text.save("t.txt", ContentFile(b"[user] hi\n"))
    session.recording.save("r.ogg", ContentFile(b"OggS recorded"))
    return session


@pytest.fixture
def staff(django_user_model, client):
    user = django_user_model.objects.create_user("support", password="pw", is_staff=True)
    client.force_login(user)
    return user


def test_exported_files_are_served_to_superusers(admin_client, exported):
    transcript = admin_client.get(exported.transcript_text.url)
    recording = admin_client.get(exported.recording.url)

    assert transcript.status_code == 200
    assert b"".join(transcript.streaming_content) == b"[user] hi\n"
    assert recording.status_code == 200
    assert b"".join(recording.streaming_content) == b"OggS recorded"
    assert "private" in transcript["Cache-Control"]


def test_staff_without_the_view_permission_are_refused(client, staff, exported):
    transcript = client.get(exported.transcript_text.url)
    recording = client.get(exported.recording.url)

    assert transcript.status_code == 403 and recording.status_code == 403
    assert transcript.json()["error"]["code"] == "forbidden"


def test_staff_with_the_view_permission_get_the_files(client, staff, exported):
    staff.user_permissions.add(Permission.objects.get(codename="view_voicesession"))

    transcript = client.get(exported.transcript_text.url)
    recording = client.get(exported.recording.url)

    assert transcript.status_code == 200 and recording.status_code == 200


def test_anonymous_callers_are_sent_to_the_login(client, exported):
    response = client.get(exported.transcript_text.url)

    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize(
    "name", ["transcripts/stray.txt", "recordings/stray.ogg", "other/secret.txt"]
)
def test_files_no_session_owns_are_not_served(admin_client, name):
    stored = default_storage.save(name, ContentFile(b"not a session's"))

    response = admin_client.get(f"/media/{stored}")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["recordings/a%00b.ogg", "transcripts/%00.txt"])
def test_a_file_name_with_a_nul_character_is_a_400(admin_client, exported, path):
    response = admin_client.get(f"/media/{path}")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
