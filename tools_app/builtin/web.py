"""web_search (through a configured provider) and web_fetch (public addresses only)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

import httpx
from amplifier_core import ToolResult
from django.conf import settings

from tools_app.builtin.base import WorkspaceTool, failure


class WebSearchTool(WorkspaceTool):
    name = "web_search"
    description = "Search the web; returns titles, addresses and snippets."
    input_schema = {
        "type": "object",
        "properties": {"query": {"type": "string", "minLength": 1, "maxLength": 500}},
        "required": ["query"],
        "additionalProperties": False,
    }

    async def execute(self, input: dict) -> ToolResult:  # noqa: A002
        if not settings.WEB_SEARCH_URL:
            return failure("not_configured", "Web search is not configured on this server.")
        headers = {}
        if settings.WEB_SEARCH_API_KEY:
            headers["Authorization"] = f"Bearer {settings.WEB_SEARCH_API_KEY}"
        try:
            async with httpx.AsyncClient(timeout=15.0) as http:
                response = await http.get(
                    settings.WEB_SEARCH_URL, params={"q": input["query"]}, headers=headers
                )
            response.raise_for_status()
            results = response.json().get("results") or []
        except (httpx.HTTPError, ValueError, AttributeError):
            return failure("provider_error", "The search provider did not answer usefully.")
        lines = [
            f"{index}. {item.get('title', '')}\n   {item.get('url', '')}\n"
            f"   {item.get('snippet', '')}"
            for index, item in enumerate(results[:10], 1)
            if isinstance(item, dict)
        ]
        return ToolResult(success=True, output="\n".join(lines) or "No results.")


async def _refused_host(url: str) -> str | None:
    """Why url may not be fetched (private, loopback, link-local ...), or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "Only http and https addresses can be fetched."
    if settings.WEB_FETCH_ALLOW_PRIVATE:
        return None
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname,
            parts.port or (443 if parts.scheme == "https" else 80),
            type=socket.SOCK_STREAM,
        )
    except socket.gaierror:
        return f"The host {parts.hostname} cannot be resolved."
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global or address.is_multicast:
            return f"{parts.hostname} resolves to a private or local address; refused."
    return None


class WebFetchTool(WorkspaceTool):
    name = "web_fetch"
    description = "Fetch a public web page and return its text (first 64 KiB)."
    input_schema = {
        "type": "object",
        "properties": {"url": {"type": "string", "minLength": 1, "maxLength": 2048}},
        "required": ["url"],
        "additionalProperties": False,
    }

    async def execute(self, input: dict) -> ToolResult:  # noqa: A002
        url = input["url"]
        cap = settings.TOOL_OUTPUT_MAX_BYTES
        async with httpx.AsyncClient(timeout=15.0, follow_redirects=False) as http:
            for _ in range(4):  # each redirect is checked like the first address
                if reason := await _refused_host(url):
                    return failure("refused", reason)
                try:
                    async with http.stream("GET", url) as response:
                        if response.is_redirect and "location" in response.headers:
                            url = urljoin(url, response.headers["location"])
                            continue
                        body = b""
                        async for chunk in response.aiter_bytes():
                            body += chunk
                            if len(body) > cap:
                                break
                except httpx.HTTPError as exc:
                    return failure(
                        "fetch_failed", f"The page could not be fetched: {type(exc).__name__}."
                    )
                text = body[:cap].decode(response.encoding or "utf-8", "replace")
                return ToolResult(
                    success=response.is_success,
                    output=text,
                    error=None
                    if response.is_success
                    else {"type": "http_status", "message": f"HTTP {response.status_code}"},
                )
        return failure("too_many_redirects", "The page redirected too many times.")
