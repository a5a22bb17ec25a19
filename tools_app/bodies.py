"""Declared request bodies of the tools endpoints."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from voiceplatform.api import Body


class ToolCallBody(Body):
    call_id: Annotated[str, Field(min_length=1, max_length=80)]
    # Checked against the tool's own JSON schema, which says more than a type could (an
    # object, as the document says).
    arguments: Annotated[Any, Field(json_schema_extra={"type": "object"})]
    # Run it in the background at once (a task), whatever the tool.
    detach: bool = False
