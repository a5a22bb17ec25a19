"""Who may call the simulator: bearer parsing and the server-key check, shared by the
HTTP views and the sideband consumer."""

from __future__ import annotations

import secrets

from django.conf import settings


def bearer_token(authorization: str) -> str:
    """The token of an `Authorization: Bearer <token>` value; "" for any other scheme."""
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def has_server_key(authorization: str) -> bool:
    """Whether an Authorization value carries the simulator's server key. Compared in
    constant time; a non-ASCII header is simply a wrong key."""
    given = bearer_token(authorization).encode("utf-8", "replace")
    return secrets.compare_digest(given, settings.SIMULATOR_API_KEY.encode())
