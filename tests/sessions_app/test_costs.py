"""A session's cost: its responses' usage, by kind of token, priced by the table."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from prometheus_client import REGISTRY

from sessions_app import costs, transcripts
from voiceplatform.settings import MODEL_PRICES_DEFAULT, env_prices

pytestmark = pytest.mark.django_db(transaction=True)

# A response.done usage in the upstream's shape.
USAGE = {
    "total_tokens": 1900,
    "input_tokens": 1200,
    "output_tokens": 700,
    "input_token_details": {
        "text_tokens": 300,
        "audio_tokens": 900,
        "cached_tokens": 250,
        "cached_tokens_details": {"text_tokens": 200, "audio_tokens": 50},
    },
    "output_token_details": {"text_tokens": 100, "audio_tokens": 600},
}
# gpt-realtime per million: text 4 / cached 0.40 / out 16; audio 32 / cached 0.40 / out 64.
EXPECTED = (
    Decimal(100) * 4
    + Decimal(850) * 32
    + Decimal(200) * Decimal("0.4")
    + Decimal(50) * Decimal("0.4")
    + Decimal(100) * 16
    + Decimal(600) * 64
) / 1_000_000


def _done(response_id: str, usage: dict) -> dict:
    return {"type": "response.done", "response": {"id": response_id, "usage": usage}}


def _counted(model: str) -> float:
    return REGISTRY.get_sample_value("voice_session_cost_usd_total", {"model": model}) or 0.0


def test_usage_is_split_into_the_kinds_priced_apart():
    usage = costs.usage_of(USAGE)

    assert usage == costs.Usage(
        input_text_tokens=100,
        input_audio_tokens=850,
        cached_text_tokens=200,
        cached_audio_tokens=50,
        output_text_tokens=100,
        output_audio_tokens=600,
    )


def test_usage_without_details_is_priced_as_audio_the_dearer_kind():
    usage = costs.usage_of({"input_tokens": 10, "output_tokens": 5, "total_tokens": 15})

    assert (usage.input_audio_tokens, usage.output_audio_tokens) == (10, 5)


@pytest.mark.parametrize("junk", [None, "many", -3, True, 10.5])
def test_nonsense_counts_are_no_tokens(junk):
    usage = costs.usage_of(
        {"input_token_details": {"text_tokens": junk}, "output_token_details": {"audio_tokens": 2}}
    )

    assert usage == costs.Usage(output_audio_tokens=2)


async def test_a_recorded_response_done_adds_its_cost_to_the_session_and_the_counter(
    make_session,
):
    session = await make_session(model="gpt-realtime", status="active")
    before = _counted("gpt-realtime")

    await transcripts.apply_events(session.pk, [_done("resp_1", USAGE)], source="sideband")
    await transcripts.apply_events(session.pk, [_done("resp_1", USAGE)], source="client")
    await session.arefresh_from_db()

    assert session.cost_usd == EXPECTED.quantize(Decimal("0.000001"))
    assert (session.input_audio_tokens, session.output_audio_tokens) == (850, 600)
    assert session.cached_text_tokens == 200 and session.total_tokens == 1900
    assert _counted("gpt-realtime") - before == pytest.approx(float(EXPECTED), abs=1e-6)


async def test_a_browsers_claimed_cost_is_capped_like_its_tokens(make_session):
    session = await make_session(model="gpt-realtime", status="active")
    huge = {**USAGE, "output_token_details": {"audio_tokens": 10**12}}

    for n in range(40):
        await transcripts.apply_events(session.pk, [_done(f"resp_{n}", huge)], source="client")
    await session.arefresh_from_db()

    assert session.output_audio_tokens == transcripts.CLIENT_TOKENS_PER_SESSION
    assert session.cost_usd <= costs.cost(
        "gpt-realtime", costs.Usage(output_audio_tokens=transcripts.CLIENT_TOKENS_PER_SESSION)
    )


def test_a_dated_snapshot_takes_its_models_prices_and_an_unknown_model_the_defaults(settings):
    settings.OPENAI_MODEL = "gpt-realtime"

    assert (
        costs.prices_for("gpt-realtime-mini-2025-10-06")
        == MODEL_PRICES_DEFAULT["gpt-realtime-mini"]
    )
    assert costs.prices_for("gpt-realtime-2025-08-28") == MODEL_PRICES_DEFAULT["gpt-realtime"]
    assert costs.prices_for("someone-elses-model") == MODEL_PRICES_DEFAULT["gpt-realtime"]


def test_a_price_table_from_the_environment_is_checked(monkeypatch):
    prices = dict.fromkeys(MODEL_PRICES_DEFAULT["gpt-realtime"], 1.5)
    monkeypatch.setenv("PRICES", json.dumps({"house-model": prices}))
    assert env_prices("PRICES", {}) == {"house-model": prices}

    for bad in ("[]", "{}", "not json", '{"m": {"text_input": 1}}', '{"m": 3}'):
        monkeypatch.setenv("PRICES", bad)
        with pytest.raises(ImproperlyConfigured):
            env_prices("PRICES", {})
    monkeypatch.setenv("PRICES", json.dumps({"m": {**prices, "text_input": -1}}))
    with pytest.raises(ImproperlyConfigured):
        env_prices("PRICES", {})
