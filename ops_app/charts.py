"""Geometry of the dashboard's small charts, drawn as inline SVG by the templates
(ops/charts/*.html): numbers in, coordinates out, no drawing library."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from django.utils import timezone

# The column chart's viewBox and the margins left for its axis labels.
WIDTH, HEIGHT = 300, 150
LEFT, RIGHT, TOP, BOTTOM = 24, 4, 10, 22
LABEL_EVERY = 3


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^k at or above value (1 for nothing)."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    return next(f * magnitude for f in (1, 2, 5, 10) if value <= f * magnitude)


def columns(buckets: list[dict[str, Any]], step: timedelta) -> dict[str, Any]:
    """Stacked columns per bucket ({start, created, failed}): failed at the bottom."""
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    baseline = TOP + plot_height
    top = nice_ceiling(max((bucket["created"] for bucket in buckets), default=0))
    slot = plot_width / max(1, len(buckets))
    bar_width = slot * 0.7
    bars = []
    for i, bucket in enumerate(buckets):
        start = timezone.localtime(bucket["start"])
        end = timezone.localtime(bucket["start"] + step)
        total = bucket["created"] / top * plot_height
        failed = bucket["failed"] / top * plot_height
        bars.append(
            {
                "x": _r(LEFT + i * slot + (slot - bar_width) / 2),
                "width": _r(bar_width),
                "ok_y": _r(baseline - total),
                "ok_height": _r(total - failed),
                "failed_y": _r(baseline - failed),
                "failed_height": _r(failed),
                "label": f"{start:%H:%M}" if i % LABEL_EVERY == 0 else "",
                "label_x": _r(LEFT + i * slot + slot / 2),
                "title": f"{start:%H:%M}–{end:%H:%M}: {bucket['created']} created,"
                f" {bucket['failed']} with errors",
            }
        )
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "tick_x": LEFT - 4,
        "right": WIDTH - RIGHT,
        "top": TOP,
        "baseline": baseline,
        "middle": _r(TOP + plot_height / 2),
        "max_label": str(int(top)),
        "label_y": HEIGHT - 6,
        "bars": bars,
    }


def meter(ok: int, failed: int) -> dict[str, float]:
    """A 100-wide bar split into the ok and failed shares."""
    total = ok + failed
    ok_share = _r(100 * ok / total) if total else 0
    return {"ok": ok_share, "failed": _r(100 - ok_share) if total else 0}


def with_bars(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Each row with "bar": its key's value as a share (0-100) of the largest."""
    largest = max((row[key] for row in rows if row[key] is not None), default=0)
    return [
        {**row, "bar": _r(100 * row[key] / largest) if largest and row[key] is not None else 0}
        for row in rows
    ]


def _r(value: float) -> float:
    return round(value, 1)
