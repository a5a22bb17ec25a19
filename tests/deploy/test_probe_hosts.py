"""Probes and scrapes reach a pod by its address: /health/* and /metrics answer whatever
Host they send, everything else still passes Django's Host check. (httpx over the ASGI
app: it sends exactly one Host header, as the kubelet does.)"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

POD_ADDRESS = "10.42.7.19:8000"


@pytest.fixture(autouse=True)
def _public_host_only(settings):
    # The WebSocket router copies ALLOWED_HOSTS when voiceplatform.asgi is first
    # imported: import it before the override, or later tests' sockets would inherit it.
    import voiceplatform.asgi  # noqa: F401

    settings.ALLOWED_HOSTS = ["voice.example.com"]


@pytest.mark.parametrize("host", [POD_ADDRESS, "127.0.0.1:8000", "[fd00::7]:8000"])
async def test_a_liveness_probe_by_pod_address_gets_200(http, host):
    response = await http.get("/health/live", headers={"Host": host})

    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


async def test_a_prometheus_scrape_by_pod_address_gets_the_metrics(http):
    response = await http.get("/metrics", headers={"Host": POD_ADDRESS})

    assert response.status_code == 200
    assert "voice_session_created_total" in response.text


async def test_the_api_by_an_unknown_host_is_still_refused(http, simulator):
    created = await http.post("/session", json={}, headers={"Host": POD_ADDRESS})
    page = await http.get("/", headers={"Host": "evil.example.org"})

    assert created.status_code == 400
    assert page.status_code == 400


async def test_only_reading_a_probe_path_skips_the_host_check(http):
    response = await http.post("/health/live", headers={"Host": POD_ADDRESS})

    assert response.status_code == 400


async def test_the_public_host_still_works(http):
    response = await http.get("/health/live", headers={"Host": "voice.example.com"})

    assert response.status_code == 200
