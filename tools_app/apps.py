from django.apps import AppConfig


class ToolsConfig(AppConfig):
    name = "tools_app"
    verbose_name = "Tools"

    def ready(self) -> None:
        # Load installed Amplifier modules once, at start-up: mounting them is async and
        # imports code, neither of which belongs on a request's event loop.
        # control: what workers answer; checks: refused agent bundles.
        from tools_app import checks, control, registry  # noqa: F401
        from voiceplatform import private_files

        registry.all_tools()
        # bash runs as other uids: what an older version left readable is closed now.
        private_files.make_private()
