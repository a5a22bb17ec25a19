from django.apps import AppConfig


class SessionsConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Voice sessions"

    def ready(self) -> None:
        from ops_app import health
        from sessions_app import journal, tasks  # noqa: F401  (tasks: the export on session_ended)

        # The journal is written as soon as the database answers again (and at start-up).
        health.on_recovery("database", journal.replay_soon)
