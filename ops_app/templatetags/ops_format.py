"""How the dashboard writes ages, latencies and shares."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def age(seconds: int | None) -> str:
    """45 s, 3 min 05 s, 2 h 04 min."""
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


@register.filter
def latency(seconds: float | None) -> str:
    """420 ms, 1.25 s; a dash without samples."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


@register.filter
def percent(share: float | None) -> str:
    """0.025 -> 2.5 %; a dash for no share at all."""
    if share is None:
        return "—"
    return f"{share * 100:.1f} %"
