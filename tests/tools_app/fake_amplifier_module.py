"""A stand-in for an installed Amplifier tool module (entry point `amplifier.modules`)."""

from amplifier_core import ToolResult


class ShoutTool:
    name = "shout"
    description = "Says the text loudly."
    input_schema = {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    }

    def __init__(self, working_dir: str | None) -> None:
        self.working_dir = working_dir

    async def execute(self, input):  # noqa: A002
        return ToolResult(success=True, output=f"{input['text'].upper()} (in {self.working_dir})")


async def mount(coordinator, config):
    await coordinator.mount("tools", ShoutTool(config.get("working_dir")), name="shout")
