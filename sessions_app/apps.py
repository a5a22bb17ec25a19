from django.apps import AppConfig


class SessionsConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Voice sessions"

    def ready(self) -> None:
        from sessions_app import (
            actions,
            sideband,
            tasks,  # noqa: F401  (connects the export to session_ended)
        )

        # Calls this process takes over from another are handled as its own are.
        sideband.take_over_with(actions.SIDEBAND_HANDLERS)
