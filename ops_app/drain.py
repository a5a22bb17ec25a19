"""Draining: a process that is about to stop takes no new sessions. The marker is a
file in VAR_DIR, which every process of a pod (or container) shares, so
`manage.py drain` run beside the server (a preStop hook) reaches it."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings


def marker() -> Path:
    return Path(settings.VAR_DIR) / "draining"


def is_draining() -> bool:
    return marker().exists()


def start() -> None:
    path = marker()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def stop() -> None:
    marker().unlink(missing_ok=True)
