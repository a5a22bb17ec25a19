from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops_app"
    verbose_name = "Operations"

    def ready(self) -> None:
        from ops_app import checks  # noqa: F401  (registers the system checks)
