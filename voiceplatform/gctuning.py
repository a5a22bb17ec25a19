"""The garbage collector of a server process: what start-up built is frozen out of
every later collection, and young collections run less often, so a full collection
(which scans every tracked object) is short and rare instead of a 100+ ms stall
inside a request."""

from __future__ import annotations

import gc

from django.conf import settings


def thresholds() -> tuple[int, ...]:
    """GC_THRESHOLDS ("gen0,gen1,gen2"), or () for CPython's own."""
    return tuple(int(part) for part in settings.GC_THRESHOLDS.split(",") if part.strip())


def tune_after_startup() -> None:
    """Called once the application is built (imports, URLconf, middleware loaded)."""
    if settings.GC_FREEZE:
        gc.collect()
        gc.freeze()
    if wanted := thresholds():
        gc.set_threshold(*wanted)
