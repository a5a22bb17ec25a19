"""What a conversation cost: the upstream's token usage, priced by the table in
settings (MODEL_PRICES, US dollars per million tokens of each kind)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal

from django.conf import settings

MILLION = Decimal(1_000_000)
# Six decimals, as VoiceSession.cost_usd stores it.
CENT_FRACTION = Decimal("0.000001")


@dataclass(frozen=True)
class Usage:
    """One response's tokens by kind; cached input is not in the input counts."""

    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    cached_text_tokens: int = 0
    cached_audio_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0

    def counts(self) -> dict[str, int]:
        return asdict(self)

    def capped(self, limit: int) -> Usage:
        return Usage(**{name: min(value, limit) for name, value in self.counts().items()})


# VoiceSession fields, with the price each kind is charged at.
PRICE_OF = {
    "input_text_tokens": "text_input",
    "input_audio_tokens": "audio_input",
    "cached_text_tokens": "text_cached_input",
    "cached_audio_tokens": "audio_cached_input",
    "output_text_tokens": "text_output",
    "output_audio_tokens": "audio_output",
}


def _count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return max(value, 0)


def _details(usage: dict, name: str) -> dict:
    details = usage.get(name)
    return details if isinstance(details, dict) else {}


def usage_of(usage: dict) -> Usage:
    """The kinds a realtime `response.done` usage reports. Its text and audio input
    counts include the cached tokens, which are priced apart. Without details, tokens
    are taken as audio, the dearer kind: an estimate errs high, not low."""
    inputs = _details(usage, "input_token_details")
    outputs = _details(usage, "output_token_details")
    if not inputs and not outputs:
        return Usage(
            input_audio_tokens=_count(usage.get("input_tokens")),
            output_audio_tokens=_count(usage.get("output_tokens")),
        )
    cached = _details(inputs, "cached_tokens_details")
    cached_text = _count(cached.get("text_tokens"))
    cached_audio = _count(cached.get("audio_tokens"))
    if not cached:  # only a total: split it as the fresh input is split
        cached_audio = _count(inputs.get("cached_tokens"))
    return Usage(
        input_text_tokens=max(_count(inputs.get("text_tokens")) - cached_text, 0),
        input_audio_tokens=max(_count(inputs.get("audio_tokens")) - cached_audio, 0),
        cached_text_tokens=cached_text,
        cached_audio_tokens=cached_audio,
        output_text_tokens=_count(outputs.get("text_tokens")),
        output_audio_tokens=_count(outputs.get("audio_tokens")),
    )


def prices_for(model: str) -> dict[str, float]:
    """The model's prices: its own entry, else the longest entry its name starts with
    (dated snapshots), else the default model's."""
    table = settings.MODEL_PRICES
    if model in table:
        return table[model]
    prefixes = [name for name in table if model.startswith(name)]
    if prefixes:
        return table[max(prefixes, key=len)]
    return table.get(settings.OPENAI_MODEL) or next(iter(table.values()))


def cost(model: str, usage: Usage) -> Decimal:
    """US dollars, to the millionth."""
    prices = prices_for(model)
    total = sum(
        (
            Decimal(count) * Decimal(str(prices[PRICE_OF[field]]))
            for field, count in usage.counts().items()
        ),
        Decimal(0),
    )
    return (total / MILLION).quantize(CENT_FRACTION)
