from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops_app"
    verbose_name = "Operations"

    def ready(self) -> None:
        # checks: registers the system checks; admin_checklists: the checklist admin.
        from ops_app import admin_checklists, checks  # noqa: F401
