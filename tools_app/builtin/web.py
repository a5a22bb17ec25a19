"""web_search (through a configured provider) and web_fetch (public addresses only)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from amplifier_core import ToolResult
from django.conf import settings

from tools_app.builtin.base import WorkspaceTool, failure

FETCH_SECONDS = 30


class WebSearchTool(WorkspaceTool):
    name = "web_search"
    slow = True
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


# IPv6 forms whose last 32 bits are an IPv4 address that a translator, a tunnel or the
# host's own stack ends up talking to: IPv4-mapped, IPv4-translated (RFC 2765 SIIT),
# NAT64's well-known prefix (RFC 6052) and IPv4-compatible. The embedded address is
# judged like a plain one. 6to4 (bits 16-48) and Teredo (the client, inverted) are read
# by ipaddress itself.
_LAST_32_BITS_IPV4 = tuple(
    ipaddress.ip_network(prefix)
    for prefix in ("::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96", "::/96")
)
# The local-use NAT64 prefix (RFC 8215) has no fixed layout to read the IPv4 address
# from, and the deprecated site-local range (RFC 3879) is routed inside a site only:
# both are refused outright (ipaddress counts site-local as global).
_NEVER_PUBLIC = tuple(ipaddress.ip_network(prefix) for prefix in ("64:ff9b:1::/48", "fec0::/10"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 form stands for (mapped, translated, NAT64,
    IPv4-compatible, 6to4, Teredo); none for a plain IPv6 address."""
    found = []
    if any(ip in prefix for prefix in _LAST_32_BITS_IPV4):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour:
        found.append(ip.sixtofour)
    if ip.teredo:
        found.extend(ip.teredo)  # the server and the client
    return found


def is_public_address(address: str) -> bool:
    """Whether address, and any IPv4 address embedded in it, is a global unicast one."""
    ip = ipaddress.ip_address(address)
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in prefix for prefix in _NEVER_PUBLIC):
            return False
        candidates.extend(_embedded_ipv4(ip))
    return all(each.is_global and not each.is_multicast for each in candidates)


async def _checked_address(url: str) -> tuple[str | None, str | None]:
    """(why url may not be fetched, or None; the address to connect to). The address
    is the one that was checked: connecting to it, not to the name again, leaves no
    room for a second DNS answer pointing inside."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a malformed host or port is the caller's mistake
        return f"'{url[:200]}' is not a valid web address.", None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "Only http and https addresses can be fetched.", None
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, port, type=socket.SOCK_STREAM
        )
    except (socket.gaierror, UnicodeError):
        return f"The host {parts.hostname} cannot be resolved.", None
    addresses = [info[4][0].split("%")[0] for info in infos]
    if not settings.WEB_FETCH_ALLOW_PRIVATE:
        for address in addresses:
            if not is_public_address(address):
                return f"{parts.hostname} resolves to a private or local address; refused.", None
    return None, addresses[0]


def _pinned(url: str, address: str) -> tuple[str, dict, dict]:
    """The url with its host replaced by address, and what keeps HTTP and TLS right."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = host + (f":{parts.port}" if parts.port else "")
    headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), headers, extensions


class WebFetchTool(WorkspaceTool):
    name = "web_fetch"
    slow = True
    description = "Fetch a public web page and return its text (first 64 KiB)."
    input_schema = {
        "type": "object",
        "properties": {"url": {"type": "string", "minLength": 1, "maxLength": 2048}},
        "required": ["url"],
        "additionalProperties": False,
    }

    async def execute(self, input: dict) -> ToolResult:  # noqa: A002
        try:
            async with asyncio.timeout(FETCH_SECONDS):
                return await self._fetch(input["url"])
        except TimeoutError:
            return failure("timeout", f"The page took longer than {FETCH_SECONDS} s.")

    async def _fetch(self, url: str) -> ToolResult:
        cap = settings.TOOL_OUTPUT_MAX_BYTES
        async with httpx.AsyncClient(timeout=15.0, follow_redirects=False) as http:
            for _ in range(4):  # each redirect is checked like the first address
                reason, address = await _checked_address(url)
                if reason:
                    return failure("refused", reason)
                target, headers, extensions = _pinned(url, address)
                try:
                    request = http.build_request(
                        "GET", target, headers=headers, extensions=extensions
                    )
                    response = await http.send(request, stream=True)
                    try:
                        if response.is_redirect and "location" in response.headers:
                            try:
                                url = urljoin(url, response.headers["location"])
                            except ValueError:
                                return failure(
                                    "refused", "The page redirected to an invalid address."
                                )
                            continue
                        body = b""
                        async for chunk in response.aiter_bytes():
                            body += chunk
                            if len(body) > cap:
                                break
                    finally:
                        await response.aclose()
                except httpx.HTTPError as exc:
                    return failure(
                        "fetch_failed",
                        f"The page could not be fetched: {type(exc).__name__}.",
                    )
                text = body[:cap].decode(response.encoding or "utf-8", "replace")
                if response.is_success:
                    return ToolResult(success=True, output=text)
                return failure("http_status", f"HTTP {response.status_code}", output=text)
        return failure("too_many_redirects", "The page redirected too many times.")
