"""`manage.py drain [--timeout S] | --cancel`: the pod stops taking new sessions and
hands its calls' sidebands over to other processes (a preStop hook). Run beside the
server, with its VAR_DIR and POD_NAME; waits until no process of this pod holds a
sideband lease, and says what happened to each call. Starting and cancelling a drain
are audited, as the other operator switches are."""

from __future__ import annotations

import asyncio
import getpass
import time

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ops_app import audit, drain
from ops_app.models import AuditEvent
from sessions_app import leases, sideband


class Command(BaseCommand):
    help = "Drains this pod: no new sessions, its calls' sidebands handed to other processes."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="seconds to wait for the pod to let go of its calls (DRAIN_TIMEOUT_SECONDS)",
        )
        parser.add_argument("--cancel", action="store_true", help="stop draining this pod")

    def handle(self, *args, timeout: float | None, cancel: bool, **options):
        pod = settings.POD_NAME
        actor = f"cli:{getpass.getuser()}"
        if cancel:
            drain.stop()
            audit.record(AuditEvent.Action.DRAIN_CANCELLED, actor_name=actor, target=f"pod {pod}")
            self.stdout.write(f"{pod}: draining off; new sessions are taken again")
            return
        timeout = settings.DRAIN_TIMEOUT_SECONDS if timeout is None else timeout
        # Recorded before the wait: a preStop hook may be cut short before it ends.
        audit.record(
            AuditEvent.Action.DRAIN_STARTED,
            actor_name=actor,
            target=f"pod {pod}",
            details={"timeout_seconds": timeout},
        )
        try:
            held, now, seconds = async_to_sync(_drain)(pod, timeout)
        except leases.Unavailable as exc:
            raise CommandError(
                f"{pod}: draining, but Redis does not answer ({exc}): who holds which call "
                "cannot be told; the pod's processes keep their calls until it does"
            ) from None
        self.stdout.write(
            f"{pod}: draining; /health/ready and POST /session answer 503, "
            "new calls are left to other processes"
        )
        self.stdout.write(f"{pod}: {len(held)} call(s) held at the start")
        for session_id, holder in sorted(held.items()):
            after = now.get(session_id)
            where = "nobody yet" if after is None else after
            if after is not None and leases.pod_of(after) == pod:
                where = f"still {after}"
            self.stdout.write(f"  session {session_id}: {holder} -> {where}")
        still = [s for s, h in now.items() if h is not None and leases.pod_of(h) == pod]
        if still:
            raise CommandError(f"{pod}: {len(still)} call(s) still held here after {timeout:g} s")
        self.stdout.write(f"{pod}: drained in {seconds:.1f} s; this pod holds no call")


async def _drain(pod: str, timeout: float) -> tuple[dict[str, str], dict[str, str | None], float]:
    """Marks the pod draining and waits until none of its processes holds a lease,
    then a little longer for other processes to take the calls over. Returns (held at
    the start, holders at the end, seconds taken)."""
    started = time.monotonic()
    deadline = started + timeout

    def ours(holders: dict[str, str | None]) -> dict[str, str]:
        return {s: h for s, h in holders.items() if h is not None and leases.pod_of(h) == pod}

    # Read before the pod hears of the drain: a fast pod may hand over at once.
    held = ours(await sideband.lease_holders())
    drain.start()
    now: dict[str, str | None] = dict(held)
    while time.monotonic() < deadline:
        now = await leases.holders(list(held))
        if not ours(now):
            break
        await asyncio.sleep(0.2)
    # Taken over within about a sweep: say by whom.
    handover_deadline = min(deadline, time.monotonic() + settings.SIDEBAND_SWEEP_SECONDS + 3)
    while any(h is None for h in now.values()) and time.monotonic() < handover_deadline:
        await asyncio.sleep(0.2)
        now = await leases.holders(list(held))
    return held, now, time.monotonic() - started
