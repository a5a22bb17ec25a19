"""Agents as Amplifier bundles: a Markdown file whose YAML front matter says what the
agent is (`meta`), which tool modules it uses (`tools`), and optionally its model
(`providers`) and caps (`session`); the body is its instruction.

Only what this server can provide is accepted. A tool module must be one of our
sandboxed built-ins (by module id such as `tool-filesystem`, or by tool name) or an
installed `amplifier.modules` entry point; nothing is fetched, so a `source:` (git+https
and the like) is refused, as is any module we do not have. A refused file is reported
with its reason (manage.py check, the admin), never half-loaded.

The module ids a bundle may name are handed in (tools_app.registry.modules()): this
module reads files and knows no tools itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MAX_BUNDLE_BYTES = 256 * 1024
# Our provider module speaks for these ids (Amplifier's OpenAI provider is the one a
# bundle for OpenAI names); our orchestrator and context modules for Amplifier's
# default loop and context.
PROVIDER_MODULES = frozenset({"provider-openai"})
ORCHESTRATOR_MODULES = frozenset({"loop-basic"})
CONTEXT_MODULES = frozenset({"context-simple"})
CAPS = ("max_steps", "max_tokens", "max_seconds")
TOP_LEVEL_KEYS = frozenset({"meta", "tools", "providers", "session", "bundle"})


class BundleRefused(Exception):
    """A bundle this server will not load; the message says why, for its author."""


@dataclass(frozen=True)
class Bundle:
    name: str
    description: str
    instruction: str
    tools: tuple[str, ...]  # tool names, resolved from its modules
    model: str
    max_steps: int
    max_tokens: int
    max_seconds: int
    path: Path | None = None


@dataclass(frozen=True)
class Catalog:
    """The agents a directory holds: the loaded ones by name, the refused by file."""

    agents: dict[str, Bundle] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        return sorted(self.agents)


def _front_matter(text: str) -> tuple[str, str]:
    lines = text.lstrip("\ufeff").splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise BundleRefused("it does not start with YAML front matter (a '---' line).")
    for index, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return "".join(lines[1:index]), "".join(lines[index + 1 :])
    raise BundleRefused("its YAML front matter has no closing '---' line.")


def _source_refusal(where: str, entry: Mapping) -> None:
    source = entry.get("source")
    if source is None:
        return
    remote = isinstance(source, str) and ("://" in source or source.startswith("git+"))
    kind = "a remote source" if remote else "a source"
    raise BundleRefused(
        f"{where} names {kind} ({str(source)[:120]!r}): this server fetches no modules. "
        "Remove `source:` and use a module that is installed here."
    )


def _entries(front: Mapping, key: str) -> list[Mapping]:
    value = front.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise BundleRefused(f"`{key}` must be a list of {{module: ...}} entries.")
    for item in value:
        if not isinstance(item.get("module"), str) or not item["module"].strip():
            raise BundleRefused(f"every `{key}` entry needs a `module` name.")
    return value


def _tools(front: Mapping, modules: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    names: list[str] = []
    for entry in _entries(front, "tools"):
        module = entry["module"].strip()
        _source_refusal(f"tool module {module!r}", entry)
        if module not in modules:
            raise BundleRefused(
                f"tool module {module!r} is not available on this server (available: "
                f"{', '.join(sorted(modules))})."
            )
        names.extend(name for name in modules[module] if name not in names)
    return tuple(names)


def _model(front: Mapping) -> str:
    model = settings.AGENT_MODEL
    for entry in _entries(front, "providers"):
        module = entry["module"].strip()
        _source_refusal(f"provider {module!r}", entry)
        if module not in PROVIDER_MODULES:
            raise BundleRefused(
                f"provider {module!r} is not available on this server (available: "
                f"{', '.join(sorted(PROVIDER_MODULES))})."
            )
        config = entry.get("config") or {}
        if not isinstance(config, Mapping):
            raise BundleRefused(f"provider {module!r}: `config` must be a mapping.")
        chosen = config.get("default_model", config.get("model"))
        if chosen is not None:
            if not isinstance(chosen, str) or not chosen.strip():
                raise BundleRefused(f"provider {module!r}: the model must be a name.")
            model = chosen.strip()
    return model


def _caps(front: Mapping) -> dict[str, int]:
    session = front.get("session") or {}
    if not isinstance(session, Mapping):
        raise BundleRefused("`session` must be a mapping.")
    for key, allowed in (("orchestrator", ORCHESTRATOR_MODULES), ("context", CONTEXT_MODULES)):
        spec = session.get(key)
        if spec is None:
            continue
        entry = spec if isinstance(spec, Mapping) else {"module": spec}
        module = entry.get("module")
        _source_refusal(f"{key} {module!r}", entry)
        if module not in allowed:
            raise BundleRefused(
                f"{key} {str(module)[:80]!r} is not available on this server (available: "
                f"{', '.join(sorted(allowed))})."
            )
    limits = {
        "max_steps": settings.AGENT_MAX_STEPS,
        "max_tokens": settings.AGENT_MAX_TOKENS,
        "max_seconds": settings.AGENT_MAX_SECONDS,
    }
    caps = {}
    for key, limit in limits.items():
        value = session.get(key, limit)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BundleRefused(f"session.{key} must be a whole number of at least 1.")
        caps[key] = min(value, limit)  # the server's cap is the ceiling
    return caps


def parse(text: str, modules: Mapping[str, tuple[str, ...]], path: Path | None = None) -> Bundle:
    """The bundle text describes, or BundleRefused saying why not."""
    header, body = _front_matter(text)
    try:
        front = yaml.safe_load(header)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        raise BundleRefused(f"its YAML front matter is malformed{where}.") from None
    if not isinstance(front, Mapping):
        raise BundleRefused("its YAML front matter must be a mapping (meta:, tools:, ...).")
    unknown = set(front) - TOP_LEVEL_KEYS
    if unknown:
        raise BundleRefused(
            f"unknown front matter keys: {', '.join(sorted(map(str, unknown)))} "
            f"(known: {', '.join(sorted(TOP_LEVEL_KEYS))})."
        )
    meta = front.get("meta", front.get("bundle"))
    if not isinstance(meta, Mapping):
        raise BundleRefused("it has no `meta:` mapping with its name and description.")
    name = meta.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise BundleRefused(
            "meta.name is missing or not a name (lowercase letters, digits, '-' and '_')."
        )
    description = meta.get("description") or ""
    if not isinstance(description, str):
        raise BundleRefused("meta.description must be text.")
    instruction = body.strip()
    if not instruction:
        raise BundleRefused("its body (the agent's instruction) is empty.")
    tools = _tools(front, modules)
    return Bundle(
        name=name,
        description=description.strip(),
        instruction=instruction,
        tools=tools,
        model=_model(front),
        path=path,
        **_caps(front),
    )


def load(path: Path, modules: Mapping[str, tuple[str, ...]]) -> Bundle:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise BundleRefused(f"it cannot be read ({exc.strerror}).") from None
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleRefused(f"it is larger than {MAX_BUNDLE_BYTES // 1024} KiB.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleRefused("it is not UTF-8 text.") from None
    return parse(text, modules, path)


def catalog(modules: Mapping[str, tuple[str, ...]], directory: Any = None) -> Catalog:
    """Every `*.md` in AGENTS_DIR (or directory), loaded or refused. Read on each call:
    a few small files, and an edited bundle counts at once."""
    root = Path(directory if directory is not None else settings.AGENTS_DIR)
    found = Catalog()
    try:
        paths = sorted(path for path in root.glob("*.md") if path.is_file())
    except OSError:
        return found
    for path in paths:
        try:
            bundle = load(path, modules)
        except BundleRefused as exc:
            found.refused[path.name] = str(exc)
            continue
        if bundle.name in found.agents:
            found.refused[path.name] = (
                f"the name {bundle.name!r} is already taken by "
                f"{found.agents[bundle.name].path.name}."
            )
            continue
        found.agents[bundle.name] = bundle
    return found
