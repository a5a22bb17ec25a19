from django.apps import AppConfig


class SessionsConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Voice sessions"

    def ready(self) -> None:
        from sessions_app import tasks  # noqa: F401  (connects the export to session_ended)
