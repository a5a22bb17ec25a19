from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops_app"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Imported for what importing does: registers the system checks, connects the
        # login audit receivers, registers the checklist admin.
        from ops_app import admin_checklists, checks, logins  # noqa: F401
