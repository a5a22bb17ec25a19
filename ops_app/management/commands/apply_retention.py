"""`manage.py apply_retention`: one retention run now (the beat task runs it every
RETENTION_SWEEP_SECONDS): transcripts (their summaries and topics with them), tool
outputs and recordings past their RETENTION_*_DAYS are removed, and the run is audited
like the periodic one."""

from __future__ import annotations

import getpass
from dataclasses import asdict

from django.core.management.base import BaseCommand

from sessions_app import retention


class Command(BaseCommand):
    help = "Removes transcripts, tool outputs and recordings past their retention, once."

    def handle(self, *args, **options):
        removed = retention.apply(actor_name=f"cli:{getpass.getuser()}")
        for name, count in asdict(removed).items():
            self.stdout.write(f"{name.replace('_', ' ')}: {count} removed")
