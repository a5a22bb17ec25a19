"""Audio quality reported by the browser (`client.stats` events, from getStats())."""

from __future__ import annotations

import math

from ops_app.metrics import (
    voice_webrtc_jitter_seconds,
    voice_webrtc_packet_loss_ratio,
    voice_webrtc_rtt_seconds,
)
from sessions_app.models import VoiceSession

FIELDS = {  # name -> (lowest, highest) accepted
    "rtt_seconds": (0.0, 60.0),
    "jitter_seconds": (0.0, 60.0),
    "packets_lost": (0, 10**9),
    "packets_received": (0, 10**9),
    "audio_level": (0.0, 1.0),
}


def sample_of(event: dict) -> dict[str, float] | None:
    """The numbers of one stats event that are present and sane."""
    stats = event.get("stats")
    if not isinstance(stats, dict):
        return None
    sample = {}
    for name, (low, high) in FIELDS.items():
        value = stats.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if low <= value <= high and math.isfinite(value):  # range first: huge ints
            sample[name] = float(value)
    return sample or None


def merge(aggregate: dict, sample: dict[str, float]) -> dict:
    """Running count, mean and max per field; packet counters are cumulative, so the
    latest values give the loss ratio."""
    merged = dict(aggregate)
    merged["samples"] = int(merged.get("samples", 0)) + 1
    for name in ("rtt_seconds", "jitter_seconds", "audio_level"):
        if name in sample:
            count = int(merged.get(f"{name}_n", 0)) + 1
            mean = float(merged.get(f"{name}_avg", 0.0))
            merged[f"{name}_n"] = count
            merged[f"{name}_avg"] = round(mean + (sample[name] - mean) / count, 6)
            merged[f"{name}_max"] = max(float(merged.get(f"{name}_max", 0.0)), sample[name])
    if "packets_received" in sample:
        lost = sample.get("packets_lost", 0.0)
        merged["packets_lost"] = int(lost)
        merged["packets_received"] = int(sample["packets_received"])
        total = lost + sample["packets_received"]
        merged["loss_ratio"] = round(lost / total, 6) if total else 0.0
    return merged


async def record(session: VoiceSession, events: list[dict]) -> int:
    """Folds stats events into the session's aggregate and the histograms."""
    samples = [sample for event in events if (sample := sample_of(event))]
    if not samples:
        return 0
    aggregate = (
        await VoiceSession.objects.values_list("audio_stats", flat=True).aget(pk=session.pk)
    ) or {}
    for sample in samples:
        aggregate = merge(aggregate, sample)
        if "rtt_seconds" in sample:
            voice_webrtc_rtt_seconds.observe(sample["rtt_seconds"])
        if "jitter_seconds" in sample:
            voice_webrtc_jitter_seconds.observe(sample["jitter_seconds"])
    if "loss_ratio" in aggregate:
        voice_webrtc_packet_loss_ratio.observe(aggregate["loss_ratio"])
    await VoiceSession.objects.filter(pk=session.pk).aupdate(audio_stats=aggregate)
    return len(samples)
