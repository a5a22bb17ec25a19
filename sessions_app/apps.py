from django.apps import AppConfig


class SessionsConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Voice sessions"

    def ready(self) -> None:
        from ops_app import health, health_checks
        from sessions_app import (
            actions,
            journal,
            sideband,
            tasks,  # noqa: F401  (connects the export to session_ended)
        )

        # The journal is written as soon as the database answers again (and at start-up).
        health.on_recovery("database", journal.replay_soon)
        health_checks.register("journal", journal.Backlog)
        # Calls this process takes over from another are handled as its own are.
        sideband.take_over_with(actions.SIDEBAND_HANDLERS)
