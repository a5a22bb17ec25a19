"""What sessions_app announces for others to act on, without knowing who listens."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once when a live session ends (kwargs: session_id); exports hang off it.
session_ended = Signal()
