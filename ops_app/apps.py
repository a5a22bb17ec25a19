from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops_app"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Imported for what importing does: registers the system checks and connects
        # the login audit receivers.
        from ops_app import checks, logins  # noqa: F401
