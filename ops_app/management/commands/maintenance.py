"""`manage.py maintenance on|off [--message --eta --end-live]`: the same switch as the
ops dashboard, for a shell or a deploy script; audited like it."""

from __future__ import annotations

import getpass

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand

from ops_app import actions


class Command(BaseCommand):
    help = "Switches maintenance mode on or off for every process (within 2 s)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("switch", choices=["on", "off"])
        parser.add_argument("--message", default="", help="shown on the maintenance page")
        parser.add_argument("--eta", default="", help='when service is back, e.g. "14:30 UTC"')
        parser.add_argument(
            "--end-live",
            action="store_true",
            help="end live conversations now instead of letting them finish",
        )

    def handle(self, *args, switch: str, message: str, eta: str, end_live: bool, **options):
        actor = f"cli:{getpass.getuser()}"
        if switch == "on":
            ended = async_to_sync(actions.maintenance_on)(
                actor=actor, message=message, eta=eta, end_live=end_live
            )
            suffix = f"; {ended} live session(s) ended" if end_live else ""
            self.stdout.write(f"maintenance on{suffix}")
        else:
            async_to_sync(actions.maintenance_off)(actor=actor)
            self.stdout.write("maintenance off")
