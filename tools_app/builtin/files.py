"""read_file, write_file, edit_file, glob, grep: all confined to the workspace."""

from __future__ import annotations

import asyncio
import codecs
import fnmatch
import time

import regex
from amplifier_core import ToolResult
from django.conf import settings

from tools_app.builtin.base import WorkspaceTool, failure
from tools_app.workspace import BLOCK, PathRefused, TreeTooDeep, Workspace

GREP_SECONDS = 10
FILE_PATH = {
    "type": "string",
    "minLength": 1,
    "maxLength": 1024,
    "description": "A path inside the workspace, e.g. notes/todo.txt.",
}


MIB = 2**20


def _no_room(workspace: Workspace, path: str, size: int) -> ToolResult | None:
    """A failure when writing size bytes to path would take the workspace past its
    quota (TOOL_WORKSPACE_MAX_BYTES), counting what the file holds now as freed."""
    quota = settings.TOOL_WORKSPACE_MAX_BYTES
    try:
        used = workspace.usage()
    except (TreeTooDeep, OSError):
        return failure(
            "workspace_full",
            "The workspace cannot be measured (nested too deep or unreadable), so nothing "
            "more is written to it; flatten or remove directories first.",
        )
    after = used - workspace.file_usage(path) + max(-(-size // BLOCK) * BLOCK, BLOCK)
    if after <= quota:
        return None
    return failure(
        "workspace_full",
        f"Writing {size} bytes would bring the workspace to {after / MIB:.1f} MiB, over its "
        f"{quota // MIB} MiB quota; nothing was written. Remove files first.",
    )


def _is_utf8(data: bytes) -> bool:
    """Whether data is UTF-8 text, checked piece by piece (no copy of the whole)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for start in range(0, len(data), MIB):
            decoder.decode(data[start : start + MIB])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


async def _guarded(operation) -> ToolResult:
    try:
        return await asyncio.to_thread(operation)
    except PathRefused as exc:
        return failure("path_refused", str(exc))
    except FileNotFoundError:
        return failure("not_found", "No such file in the workspace.")
    except IsADirectoryError:
        return failure("is_a_directory", "That path is a directory.")
    except UnicodeDecodeError:
        return failure("binary_file", "The file is not UTF-8 text.")
    except TreeTooDeep as exc:
        return failure("too_deep", f"{exc} Search a directory further down.")
    except OSError as exc:
        return failure("os_error", f"The file system refused: {exc.strerror}.")


class ReadFileTool(WorkspaceTool):
    name = "read_file"
    description = "Read a text file from the workspace, with line numbers."
    input_schema = {
        "type": "object",
        "properties": {
            "file_path": FILE_PATH,
            "offset": {"type": "integer", "minimum": 1, "description": "First line (1-based)."},
            "limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": 10_000,
                "description": "How many lines (default 2000).",
            },
        },
        "required": ["file_path"],
        "additionalProperties": False,
    }

    async def execute(self, input: dict) -> ToolResult:  # noqa: A002
        def read() -> ToolResult:
            cap = settings.TOOL_READ_MAX_BYTES
            data = self.workspace.read_bytes(input["file_path"], cap)
            lines = data[:cap].decode("utf-8").splitlines()
            # JSON Schema's "integer" admits 2.0: take whole numbers as such.
            start = int(input.get("offset", 1))
            chosen = lines[start - 1 : start - 1 + int(input.get("limit", 2000))]
            text = "\n".join(
                f"{number:6}\t{line}" for number, line in enumerate(chosen, start=start)
            )
            if len(data) > cap:
                text += f"\n[file cut at {cap} bytes]"
            return ToolResult(success=True, output=text)

        return await _guarded(read)


class WriteFileTool(WorkspaceTool):
    name = "write_file"
    description = "Create or overwrite a text file in the workspace."
    input_schema = {
        "type": "object",
        "properties": {
            "file_path": FILE_PATH,
            "content": {"type": "string", "maxLength": 1_000_000},
        },
        "required": ["file_path", "content"],
        "additionalProperties": False,
    }

    async def execute(self, input: dict) -> ToolResult:  # noqa: A002
        def write() -> ToolResult:
            data = input["content"].encode()
            if refused := _no_room(self.workspace, input["file_path"], len(data)):
                return refused
            self.workspace.write_bytes(input["file_path"], data)
            return ToolResult(
                success=True, output=f"Wrote {len(data)} bytes to {input['file_path']}."
            )

        return await _guarded(write)


class EditFileTool(WorkspaceTool):
    name = "edit_file"
    description = (
        "Replace exact text in a workspace file (old_string must be unique unless replace_all)."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "file_path": FILE_PATH,
            "old_string": {"type": "string", "minLength": 1, "maxLength": 100_000},
            "new_string": {"type": "string", "maxLength": 100_000},
            "replace_all": {"type": "boolean"},
        },
        "required": ["file_path", "old_string", "new_string"],
        "additionalProperties": False,
    }

    async def execute(self, input: dict) -> ToolResult:  # noqa: A002
        def edit() -> ToolResult:
            # The same bound as a file bash writes; the whole file or nothing.
            limit = settings.TOOL_BASH_FILE_SIZE_BYTES
            path = input["file_path"]
            data = self.workspace.read_bytes(path, limit)
            if len(data) > limit:
                return failure(
                    "file_too_large",
                    f"The file is larger than {limit // MIB} MiB, the most edit_file handles;"
                    " it was not changed.",
                )
            if not _is_utf8(data):
                return failure("binary_file", "The file is not UTF-8 text.")
            old, new = input["old_string"].encode(), input["new_string"].encode()
            # On UTF-8 text, bytes match where characters do.
            count = data.count(old)
            if count == 0:
                return failure("no_match", "old_string does not occur in the file.")
            if count > 1 and not input.get("replace_all"):
                return failure(
                    "ambiguous",
                    f"old_string occurs {count} times; make it unique or set replace_all.",
                )
            size = len(data) + count * (len(new) - len(old))
            if size > limit:
                return failure(
                    "file_too_large",
                    f"The edited file would be {size / MIB:.1f} MiB, over the {limit // MIB} MiB"
                    " limit for a file; it was not changed.",
                )
            if refused := _no_room(self.workspace, path, size):
                return refused
            self.workspace.write_bytes(path, data.replace(old, new))
            return ToolResult(success=True, output=f"Replaced {count} occurrence(s).")

        return await _guarded(edit)


def _matches(path: str, pattern: str) -> bool:
    return fnmatch.fnmatch(path, pattern) or (
        pattern.startswith("**/") and fnmatch.fnmatch(path, pattern[3:])
    )


class GlobTool(WorkspaceTool):
    name = "glob"
    description = "List workspace files matching a glob pattern, e.g. **/*.py."
    input_schema = {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "minLength": 1, "maxLength": 300},
            "path": {"type": "string", "maxLength": 1024},
        },
        "required": ["pattern"],
        "additionalProperties": False,
    }

    async def execute(self, input: dict) -> ToolResult:  # noqa: A002
        def find() -> ToolResult:
            self.workspace.parts("x/" + input["pattern"])  # refuses '..' and absolutes
            found = [
                p
                for p in self.workspace.walk(input.get("path") or ".")
                if _matches(p, input["pattern"])
            ][:1000]
            return ToolResult(success=True, output="\n".join(found) or "No files match.")

        return await _guarded(find)


class GrepTool(WorkspaceTool):
    name = "grep"
    description = "Search workspace files for a regular expression; prints path:line: text."
    input_schema = {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "minLength": 1, "maxLength": 1000},
            "path": {"type": "string", "maxLength": 1024},
            "glob": {"type": "string", "maxLength": 300},
            "ignore_case": {"type": "boolean"},
        },
        "required": ["pattern"],
        "additionalProperties": False,
    }

    async def execute(self, input: dict) -> ToolResult:  # noqa: A002
        try:
            pattern = regex.compile(
                input["pattern"], regex.IGNORECASE if input.get("ignore_case") else 0
            )
        except regex.error as exc:
            return failure("bad_pattern", f"The pattern is not a valid regex: {exc}.")
        deadline = time.monotonic() + GREP_SECONDS

        def search() -> ToolResult:
            hits: list[str] = []
            for path in self.workspace.walk(input.get("path") or "."):
                if input.get("glob") and not _matches(path, input["glob"]):
                    continue
                data = self.workspace.read_bytes(path, settings.TOOL_READ_MAX_BYTES)
                for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return failure("timeout", f"grep stopped after {GREP_SECONDS} s.")
                    try:
                        found = pattern.search(line, timeout=remaining)
                    except TimeoutError:
                        return failure("timeout", f"grep stopped after {GREP_SECONDS} s.")
                    if found:
                        hits.append(f"{path}:{number}: {line[:300]}")
                        if len(hits) >= 500:
                            return ToolResult(
                                success=True, output="\n".join(hits) + "\n[stopped at 500 matches]"
                            )
            return ToolResult(success=True, output="\n".join(hits) or "No matches.")

        return await _guarded(search)
