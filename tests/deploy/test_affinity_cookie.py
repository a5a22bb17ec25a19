"""Who owns VOICE_AFFINITY: the app names its pod in the cookie (compose: nginx routes on
that value), or stays silent where the ingress sets a cookie of that name itself
(SESSION_AFFINITY_COOKIE=off, Kubernetes with ingress-nginx)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from voiceplatform.settings import env_choice

pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_app_sets_the_affinity_cookie_by_default(api, simulator, settings):
    settings.POD_NAME = "voice-server-7d9f-abcde"

    response = await api.post("/session", content_type="application/json")

    assert response.status_code == 201
    cookie = response.cookies["VOICE_AFFINITY"]
    assert cookie.value == "voice-server-7d9f-abcde"
    assert cookie["max-age"] == 900 and cookie["httponly"] and cookie["samesite"] == "Lax"


async def test_with_the_cookie_off_the_app_leaves_it_to_the_ingress(api, simulator, settings):
    settings.SESSION_AFFINITY_COOKIE = "off"

    response = await api.post("/session", content_type="application/json")

    assert response.status_code == 201
    assert "VOICE_AFFINITY" not in response.cookies
    # Non-browser clients still get the id a load balancer can hash on.
    assert response["X-Voice-Session-Id"] == response.json()["session_id"]


@pytest.mark.parametrize(("value", "expected"), [("app", "app"), (" OFF ", "off"), ("", "app")])
def test_the_setting_reads_app_or_off(monkeypatch, value, expected):
    monkeypatch.setenv("SESSION_AFFINITY_COOKIE", value)

    assert env_choice("SESSION_AFFINITY_COOKIE", ("app", "off"), "app") == expected


def test_a_misspelt_owner_stops_the_start(monkeypatch):
    monkeypatch.setenv("SESSION_AFFINITY_COOKIE", "ingres")

    with pytest.raises(ImproperlyConfigured, match="SESSION_AFFINITY_COOKIE='ingres'"):
        env_choice("SESSION_AFFINITY_COOKIE", ("app", "off"), "app")
