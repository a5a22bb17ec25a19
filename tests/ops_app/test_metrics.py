"""GET /metrics: every metric the seed names (8.2) plus capacity and level, with
plausible values after a scripted session with a tool call; private when a token is set."""

from __future__ import annotations

import re

import pytest

from sessions_app.models import VoiceSession

pytestmark = pytest.mark.django_db(transaction=True)

SEED_METRICS = (
    "voice_sessions_active",
    "voice_session_duration_seconds",
    "voice_session_created_total",
    "voice_api_request_duration_seconds",
    "voice_openai_latency_seconds",
    "voice_tool_execution_duration_seconds",
    "voice_tool_execution_total",
    "voice_errors_total",
    "circuit_breaker_state",
    "voice_sessions_capacity",
    "voice_degradation_level",
)


def _value(page: str, sample: str) -> float:
    found = re.search(rf"^{re.escape(sample)} (\S+)$", page, re.MULTILINE)
    assert found, f"{sample} is not exported"
    return float(found.group(1))


async def test_a_scripted_session_with_a_tool_call_shows_every_seed_metric(
    api, simulator, settings
):
    settings.SESSION_CAPACITY = 50
    created = (await api.post("/session", content_type="application/json")).json()
    auth = {"Authorization": f"Bearer {created['session_token']}"}
    await VoiceSession.objects.filter(pk=created["session_id"]).aupdate(status="active")
    tool = await api.post(
        "/tools/bash",
        {"call_id": "call_m", "arguments": {"command": "echo metrics"}},
        content_type="application/json",
        headers=auth,
    )
    live_page = (await api.get("/metrics")).content.decode()
    await api.post(created["urls"]["end"], headers=auth)
    simulator.fault("error", status=500, count=3)
    await api.post("/session", content_type="application/json")  # an upstream error

    page = (await api.get("/metrics")).content.decode()

    assert tool.json()["status"] == "succeeded"
    for name in SEED_METRICS:
        assert f"# TYPE {name} " in page, name
    pod = settings.POD_NAME
    assert (
        _value(live_page, f'voice_sessions_active{{pod="{pod}",region="{settings.REGION}"}}') == 1
    )
    assert _value(page, f'voice_sessions_capacity{{pod="{pod}"}}') == 50
    assert _value(page, "voice_degradation_level") == 1
    assert _value(page, 'voice_tool_execution_total{status="succeeded",tool_name="bash"}') >= 1
    assert _value(page, "voice_session_duration_seconds_count") >= 1
    assert _value(page, 'voice_errors_total{component="openai",error_type="upstream_error"}') >= 1
    assert (
        _value(
            page,
            'voice_api_request_duration_seconds_count{endpoint="/session",method="POST",status="201"}',
        )
        >= 1
    )
    assert "django_http_requests_total_by_method_total" in page  # django-prometheus is on


async def test_with_a_token_set_metrics_answer_only_that_token(api, settings):
    settings.METRICS_BEARER_TOKEN = "scrape-secret"

    anonymous = await api.get("/metrics")
    wrong = await api.get("/metrics", headers={"Authorization": "Bearer nope"})
    right = await api.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})

    assert anonymous.status_code == wrong.status_code == 401
    assert right.status_code == 200 and b"voice_sessions_capacity" in right.content


async def test_a_garbled_content_length_is_a_400_not_a_500(api):
    response = await api.post(
        "/session", "{}", content_type="application/json", headers={"Content-Length": "abc"}
    )

    assert response.status_code == 400


def test_the_deploy_check_warns_when_production_leaves_metrics_open(settings):
    from ops_app.checks import production_settings

    settings.PRODUCTION = True
    settings.METRICS_BEARER_TOKEN = ""
    open_ids = {problem.id for problem in production_settings(None)}
    settings.METRICS_BEARER_TOKEN = "scrape-secret"
    closed_ids = {problem.id for problem in production_settings(None)}

    assert "ops_app.W006" in open_ids and "ops_app.W006" not in closed_ids


REQUEST_METRICS = ("django_http_", "voice_api_request_")
KNOWN_METHOD_LABELS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}


def _request_series(page: str) -> set[str]:
    """Every labelled sample line of the request metrics, without its value."""
    return {
        line.rpartition(" ")[0]
        for line in page.splitlines()
        if line.startswith(REQUEST_METRICS) and "{" in line
    }


def _label_values(series: set[str], label: str) -> set[str]:
    return {value for line in series for value in re.findall(rf'\b{label}="([^"]*)"', line)}


async def test_invented_methods_and_paths_add_no_series_to_the_request_metrics(api):
    async def invent(tag: str) -> None:
        for n in range(3):
            for path in ("/session", "/health", f"/no-such-page-{tag}{n}"):
                await api.generic(f"X{tag.upper()}{n}", path)
            await api.get(f"/no-such-page-{tag}{n}")

    await invent("a")  # every kind of label value these requests can produce, once
    await api.get("/metrics")  # and the scrape's own
    before = _request_series((await api.get("/metrics")).content.decode())

    await invent("b")  # new method names and paths only
    after = _request_series((await api.get("/metrics")).content.decode())

    assert after == before
    assert _label_values(after, "method") <= KNOWN_METHOD_LABELS
    assert "other" in _label_values(after, "method")
    assert "unmatched" in _label_values(after, "view")
    assert all(value.isdigit() or value == "other" for value in _label_values(after, "status"))
