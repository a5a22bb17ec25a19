"""Request plumbing shared by the JSON endpoints: method checks, bodies, callers' IPs."""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Callable, Mapping
from typing import TypeVar

import pydantic
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.http import HttpRequest
from django.views.decorators.csrf import csrf_exempt

from voiceplatform.errors import (
    BadRequest,
    ErrorCode,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
)


def api_view(*methods: str, before_body: Callable[..., object] | None = None) -> Callable:
    """An async JSON endpoint: wrong methods get a JSON 405. CSRF is not checked by
    middleware here: these endpoints authenticate with bearer tokens; a view that also
    accepts the login cookie checks CSRF itself (see sessions_app.callers).

    before_body(headers, **url_kwargs) raises the ApiError that refuses a request from
    its headers alone: the body limits (voiceplatform.body_limits, daphne_limits) run it
    before any of the body is read, so a caller who may not upload costs no upload. The
    view still makes its own, full check."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args, **kwargs):
            if request.method not in methods:
                raise MethodNotAllowed(
                    f"{request.method} is not allowed here; use {', '.join(methods)}.",
                    headers={"Allow": ", ".join(methods)},
                )
            return await view(request, *args, **kwargs)

        wrapper.api_methods = methods  # what GET /api/openapi.json must document
        wrapper.before_body = before_body
        return csrf_exempt(wrapper)

    return decorate


def read_body(request: HttpRequest, *, max_bytes: int, content_types: tuple[str, ...]) -> bytes:
    """The raw body, after checking its declared type and size."""
    _check_declared_length(request, max_bytes)
    body = request.body
    if len(body) > max_bytes:
        raise _too_large(max_bytes)
    if body and request.content_type not in content_types:
        raise _unsupported(content_types)
    return body


SPOOL_CHUNK = 64 * 1024


async def spool_body(
    request: HttpRequest, *, max_bytes: int, content_types: tuple[str, ...]
) -> TemporaryUploadedFile:
    """The raw body copied to a temporary file a chunk at a time, never whole in memory
    (for bodies of megabytes), after checking its declared type and size. The caller
    closes it, which deletes it; storage may move it instead of copying."""
    _check_declared_length(request, max_bytes)
    if request.content_type and request.content_type not in content_types:
        raise _unsupported(content_types)  # before reading any of it
    return await sync_to_async(_spool)(request, max_bytes, content_types)


def _spool(
    request: HttpRequest, max_bytes: int, content_types: tuple[str, ...]
) -> TemporaryUploadedFile:
    spooled = TemporaryUploadedFile("body", request.content_type, 0, None)
    try:
        while chunk := request.read(SPOOL_CHUNK):
            spooled.size += len(chunk)
            if spooled.size > max_bytes:
                raise _too_large(max_bytes)
            spooled.write(chunk)
        if spooled.size and request.content_type not in content_types:
            raise _unsupported(content_types)  # a body, of no declared type
        spooled.seek(0)
    except BaseException:
        spooled.close()
        raise
    return spooled


def _check_declared_length(request: HttpRequest, max_bytes: int) -> None:
    declared = request.headers.get("Content-Length") or "0"
    try:
        length = int(declared)
    except ValueError:
        raise BadRequest("Content-Length is not a number.") from None
    if length > max_bytes:
        raise _too_large(max_bytes)


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The body is larger than {max_bytes} bytes.")


def _unsupported(content_types: tuple[str, ...]) -> UnsupportedMediaType:
    return UnsupportedMediaType(f"Send Content-Type: {' or '.join(content_types)}.")


class Body(pydantic.BaseModel):
    """A declared JSON request body: unknown fields, wrong types and lengths fail the
    same way on every endpoint (unknown_field, missing_field, invalid_<field>)."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)


B = TypeVar("B", bound=Body)


def parse_body(request: HttpRequest, spec: type[B], *, optional: bool = False) -> B:
    """The request's JSON body as spec, or the matching 400/413/415."""
    body = read_body(
        request, max_bytes=settings.JSON_MAX_BYTES, content_types=("application/json",)
    )
    if not body.strip():
        if not optional:
            raise BadRequest("A JSON body is required.", code=ErrorCode.INVALID_JSON)
        data = {}
    else:
        data = parse_json(body)
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object.", code=ErrorCode.INVALID_JSON)
    try:
        return spec.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _as_bad_request(exc) from None


def parse_query(request: HttpRequest, spec: type[B]) -> B:
    """The request's query string as spec (each parameter once), or the matching 400."""
    repeated = sorted(name for name, values in request.GET.lists() if len(values) > 1)
    if repeated:
        raise BadRequest(
            f"Give each parameter once: {', '.join(repeated)}.", code=ErrorCode.BAD_REQUEST
        )
    data = request.GET.dict()
    try:
        return spec.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _as_bad_request(exc) from None


def _as_bad_request(exc: pydantic.ValidationError) -> BadRequest:
    errors = exc.errors(include_url=False)
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        return BadRequest(f"Unknown field(s): {', '.join(unknown)}.", code=ErrorCode.UNKNOWN_FIELD)
    missing = sorted(str(e["loc"][0]) for e in errors if e["type"] == "missing")
    if missing:
        return BadRequest(f"Missing field(s): {', '.join(missing)}.", code=ErrorCode.MISSING_FIELD)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    message = first["msg"].removeprefix("Value error, ")
    field = str(first["loc"][0]) if first["loc"] else ""
    try:
        code = ErrorCode(f"invalid_{field}")
    except ValueError:  # a field without a code of its own
        code = ErrorCode.BAD_REQUEST
    return BadRequest(f"{where}: {message}.", code=code)


MAX_JSON_DEPTH = 32


def parse_json(body: bytes | str):
    """JSON that PostgreSQL and our code can hold: not too deep, no NUL characters and
    no lone surrogates in any string; otherwise 400."""
    try:
        data = json.loads(body, parse_constant=_no_constants, parse_float=_finite)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("The body is not valid JSON.", code=ErrorCode.INVALID_JSON) from None
    _check_values(data, 0)
    return data


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


def _check_values(value, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise BadRequest("The JSON is nested too deeply.", code=ErrorCode.INVALID_JSON)
    if isinstance(value, str):
        if "\x00" in value:
            raise BadRequest("Strings may not contain NUL characters.", code=ErrorCode.INVALID_JSON)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(
                "Strings must be valid Unicode.", code=ErrorCode.INVALID_JSON
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_values(key, depth + 1)
            _check_values(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_values(item, depth + 1)


def client_ip(request: HttpRequest) -> str | None:
    """The caller's address: behind TRUSTED_PROXY_COUNT proxies, the hop they saw
    (the left of X-Forwarded-For is the client's to write, so it is not trusted)."""
    return client_address(
        request.META.get("REMOTE_ADDR", ""), request.headers.get("X-Forwarded-For", "")
    )


def scope_client_ip(scope: dict) -> str | None:
    """client_ip for an ASGI scope (a WebSocket's)."""
    peer = scope.get("client") or ("", 0)
    forwarded = b",".join(
        value for name, value in scope.get("headers", []) if name.lower() == b"x-forwarded-for"
    )
    return client_address(peer[0] or "", forwarded.decode("latin-1"))


def client_address(remote_addr: str, forwarded_for: str) -> str | None:
    """The caller's address from the peer's and the X-Forwarded-For header."""
    candidates = [remote_addr]
    if settings.USE_X_FORWARDED_FOR:
        hops = [hop.strip() for hop in forwarded_for.split(",")]
        hops = [hop for hop in hops if hop]
        if len(hops) >= settings.TRUSTED_PROXY_COUNT:
            candidates.insert(0, hops[-settings.TRUSTED_PROXY_COUNT])
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


def client_network(ip: str | None) -> str | None:
    """What per-address limits count for ip: the address itself, or for IPv6 its /64,
    which one subscriber holds whole (rotating within it must not dodge a limit)."""
    if not ip:
        return None
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def lockout_address(request: HttpRequest) -> str | None:
    """What login lockouts count (AXES_CLIENT_IP_CALLABLE): the caller's client_network,
    as every other per-address limit, written as an address for axes' address column:
    for IPv6 the first address of the /64, which stands for all of it."""
    network = client_network(client_ip(request))
    return network.partition("/")[0] if network else None


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of `Authorization: Bearer <token>` in headers (a request's, or the
    case-insensitive ones body_limits reads before the body), or ""."""
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""
