"""`manage.py simulator --port N`: the realtime simulator on its own port, at the same
paths as the embedded mount (http://host:N/simulator/v1/...)."""

from __future__ import annotations

import os

from daphne.cli import CommandLineInterface
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Runs the realtime simulator (OpenAI Realtime stand-in) on its own port."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--host", default="127.0.0.1")

    def handle(self, *args, host: str, port: int, **options) -> None:
        # Its key and webhook secret are published defaults (settings refuse
        # SIMULATOR_ENABLED with PRODUCTION=1 for the same reason).
        if settings.PRODUCTION:
            raise CommandError("The simulator is never served with PRODUCTION=1.")
        self.stdout.write(f"simulator on http://{host}:{port}/simulator")
        # The simulator's own ASGI app: none of the product's routes or middleware.
        CommandLineInterface().run(
            [
                "-b",
                host,
                "-p",
                str(port),
                "--access-log",
                os.devnull,
                "sessions_app.simulator:application",
            ]
        )
