"""Our Amplifier provider module: the official `openai` SDK's Responses API, on the
same upstream and key as the voice model (OpenAI, or the simulator without a key).

It takes Amplifier's ChatRequest (system, user, assistant text and tool calls, tool
results; a response format, as text.format) to Responses input items, and the answer
back to a ChatResponse with its tool calls and usage, the cost priced like the voice
model's (sessions_app.costs).
Upstream failures become amplifier-core's LLM errors.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx2
import openai
from amplifier_core import (
    AuthenticationError,
    ChatRequest,
    ChatResponse,
    InvalidRequestError,
    LLMError,
    LLMTimeoutError,
    ModelInfo,
    ProviderInfo,
    ProviderUnavailableError,
    RateLimitError,
    TextBlock,
    ToolCall,
    ToolCallBlock,
    Usage,
)
from django.conf import settings

from sessions_app import costs
from sessions_app.realtime import api_key
from voiceplatform import tracing

NAME = "openai"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(block.text for block in content if getattr(block, "type", "") == "text")


def input_items(request: ChatRequest) -> tuple[str, list[dict]]:
    """(instructions, input items) for the Responses API."""
    instructions: list[str] = []
    items: list[dict] = []
    for message in request.messages:
        if message.role in ("system", "developer"):
            instructions.append(_text_of(message.content))
        elif message.role == "tool":
            output = _text_of(message.content)
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.tool_call_id or "",
                    "output": output,
                }
            )
        elif message.role == "assistant":
            text = _text_of(message.content)
            if text:
                items.append({"role": "assistant", "content": text})
            if not isinstance(message.content, str):
                for block in message.content:
                    if block.type == "tool_call":
                        items.append(
                            {
                                "type": "function_call",
                                "call_id": block.id,
                                "name": block.name,
                                "arguments": json.dumps(block.input),
                            }
                        )
        else:
            items.append({"role": "user", "content": _text_of(message.content)})
    return "\n\n".join(part for part in instructions if part), items


def _arguments(raw: Any) -> dict:
    """A function call's arguments; what is not a JSON object is passed on as such
    under `_raw`, so the tool's schema check tells the model what was wrong."""
    try:
        value = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {"_raw": str(raw)[:1000]}
    return value if isinstance(value, dict) else {"_raw": str(raw)[:1000]}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_of(model: str, usage: Any) -> Usage:
    """Amplifier's Usage, cost included (the Responses API counts cached input inside
    input_tokens; it is priced apart)."""
    data = usage.model_dump() if hasattr(usage, "model_dump") else dict(usage or {})
    inputs, outputs = _count(data.get("input_tokens")), _count(data.get("output_tokens"))
    cached = _count((data.get("input_tokens_details") or {}).get("cached_tokens"))
    cached = min(cached, inputs)
    priced = costs.Usage(
        input_text_tokens=inputs - cached, cached_text_tokens=cached, output_text_tokens=outputs
    )
    return Usage(
        input_tokens=inputs,
        output_tokens=outputs,
        total_tokens=inputs + outputs,
        cache_read_tokens=cached,
        cost_usd=Decimal(costs.cost(model, priced)),
    )


def text_format(response_format: Any) -> dict:
    """The Responses API's text.format for Amplifier's response_format: a JSON schema
    ({"name", "schema"}, as Chat Completions names one), any JSON object, or text."""
    kind = getattr(response_format, "type", "text")
    if kind == "json_schema":
        spec = response_format.json_schema
        shaped = {"type": "json_schema", "name": spec.get("name") or "answer"}
        shaped["schema"] = spec.get("schema", spec)
        if response_format.strict is not None:
            shaped["strict"] = response_format.strict
        return shaped
    return {"type": "json_object" if kind == "json" else "text"}


def _translate(exc: Exception) -> LLMError:
    kwargs = {"provider": NAME}
    if isinstance(exc, openai.APITimeoutError):
        return LLMTimeoutError("The agent's model took too long to answer.", **kwargs)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderUnavailableError("The agent's model cannot be reached.", **kwargs)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return RateLimitError("The agent's model is rate limited.", **kwargs)
        if status in (401, 403):
            return AuthenticationError("The agent's model refused our key.", **kwargs)
        if status >= 500:
            return ProviderUnavailableError(f"The agent's model failed ({status}).", **kwargs)
        return InvalidRequestError(f"The agent's model refused the request ({status}).", **kwargs)
    return LLMError("The agent's model gave an unusable answer.", **kwargs)


class ResponsesProvider:
    """Amplifier's Provider protocol over the Responses API."""

    def __init__(self, config: dict | None = None) -> None:
        config = config or {}
        self.model = config.get("model") or settings.AGENT_MODEL
        self._client: openai.AsyncOpenAI | None = None

    @property
    def name(self) -> str:
        return NAME

    def get_info(self) -> ProviderInfo:
        return ProviderInfo(
            id=NAME,
            display_name="OpenAI (Responses API)",
            credential_env_vars=["OPENAI_API_KEY"],
            capabilities=["tools"],
            defaults={"model": self.model},
        )

    async def list_models(self) -> list[ModelInfo]:
        return []

    def client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            timeout = settings.AGENT_REQUEST_TIMEOUT_SECONDS
            self._client = openai.AsyncOpenAI(
                api_key=api_key(),
                base_url=settings.OPENAI_BASE_URL.rstrip("/") + "/v1",
                http_client=httpx2.AsyncClient(timeout=httpx2.Timeout(timeout, connect=5.0)),
                max_retries=settings.OPENAI_MAX_RETRIES,
                timeout=timeout,
            )
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def complete(self, request: ChatRequest, **kwargs: Any) -> ChatResponse:
        model = request.model or self.model
        instructions, items = input_items(request)
        tools = [
            {
                "type": "function",
                "name": tool.name,
                "description": tool.description or "",
                "parameters": tool.parameters,
            }
            for tool in request.tools or []
        ]
        arguments: dict[str, Any] = {"model": model, "input": items}
        if instructions:
            arguments["instructions"] = instructions
        if tools:
            arguments["tools"] = tools
        if request.max_output_tokens:
            arguments["max_output_tokens"] = request.max_output_tokens
        if request.response_format is not None:
            arguments["text"] = {"format": text_format(request.response_format)}
        # Named as OpenTelemetry's generative-AI conventions name a model call.
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": model,
        }
        with tracing.span(f"chat {model}", attributes) as span:
            try:
                response = await self.client().responses.create(**arguments)
            except openai.APIError as exc:
                raise _translate(exc) from None
            usage = usage_of(model, response.usage)
            span.set_attributes(
                {
                    "gen_ai.response.id": response.id,
                    "gen_ai.usage.input_tokens": usage.input_tokens,
                    "gen_ai.usage.output_tokens": usage.output_tokens,
                }
            )
        content: list[Any] = []
        calls: list[ToolCall] = []
        for item in response.output or []:
            kind = getattr(item, "type", "")
            if kind == "message":
                text = "".join(
                    part.text for part in item.content or [] if part.type == "output_text"
                )
                if text:
                    content.append(TextBlock(text=text))
            elif kind == "function_call":
                call = ToolCall(
                    id=item.call_id, name=item.name, arguments=_arguments(item.arguments)
                )
                calls.append(call)
                content.append(ToolCallBlock(id=call.id, name=call.name, input=call.arguments))
        return ChatResponse(
            content=content,
            tool_calls=calls or None,
            usage=usage,
            finish_reason="tool_calls" if calls else "stop",
            metadata={"response_id": response.id, "model": model},
        )

    def parse_tool_calls(self, response: ChatResponse) -> list[ToolCall]:
        return list(response.tool_calls or [])


async def mount(coordinator: Any, config: dict | None = None):
    """Amplifier's module entry: mounts the provider, returns its cleanup."""
    provider = ResponsesProvider(config)
    await coordinator.mount("providers", provider, name=NAME)
    return provider.close
