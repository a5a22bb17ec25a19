"""The standard Amplifier tools, with Amplifier's names and argument names."""

from tools_app.builtin.bash import BashTool
from tools_app.builtin.delegate import DelegateTool
from tools_app.builtin.files import EditFileTool, GlobTool, GrepTool, ReadFileTool, WriteFileTool
from tools_app.builtin.task_control import CancelTaskTool, TaskStatusTool
from tools_app.builtin.web import WebFetchTool, WebSearchTool

BUILTIN_TOOLS = (
    BashTool,
    ReadFileTool,
    WriteFileTool,
    EditFileTool,
    GlobTool,
    GrepTool,
    WebSearchTool,
    WebFetchTool,
    TaskStatusTool,
    CancelTaskTool,
    DelegateTool,  # built by the registry, which hands it the other tools
)
