"""Transcript exports and recordings on local storage, for staff who may view sessions
(on S3 the admin links are signed, expiring URLs instead). Served with byte ranges, so
the admin's audio player can seek in a recording."""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils._os import safe_join
from django.utils.cache import patch_cache_control
from django.utils.http import http_date

from sessions_app.models import VoiceSession
from voiceplatform.errors import ApiError, ErrorCode, Forbidden, NotFound

VIEW_SESSIONS = "sessions_app.view_voicesession"
CHUNK = 64 * 1024
# ASCII digits only (\d would take any script's, which RFC 9110 does not).
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
# A byte position this long is past the end of any file: longer ones are read as this
# rather than parsed (int() of thousands of digits is slow, and refused past 4300).
_POSITION_DIGITS = 18


@staff_member_required
def session_file(request: HttpRequest, path: str) -> HttpResponse:
    """One file a session owns; being staff is not enough, the file is part of the
    session's history, so it takes the permission to view sessions."""
    if not request.user.has_perm(VIEW_SESSIONS):
        raise Forbidden("Viewing session files needs the permission to view sessions.")
    # Only names a session points at: nothing else under MEDIA_ROOT is reachable.
    if not VoiceSession.objects.owning_file(path).exists():
        raise NotFound("No such session file.")
    try:
        full = Path(safe_join(settings.MEDIA_ROOT, path))
        stat = full.stat()
    except (OSError, ValueError):
        raise NotFound("No such session file.") from None
    span = byte_range(request.headers.get("Range", ""), stat.st_size)
    content_type = mimetypes.guess_type(full.name)[0] or "application/octet-stream"
    if span is None:
        response = FileResponse(full.open("rb"), content_type=content_type)
    else:
        start, end = span
        response = StreamingHttpResponse(
            _chunks(full, start, end - start + 1), status=206, content_type=content_type
        )
        response["Content-Range"] = f"bytes {start}-{end}/{stat.st_size}"
        response["Content-Length"] = str(end - start + 1)
    response["Accept-Ranges"] = "bytes"
    response["Last-Modified"] = http_date(stat.st_mtime)
    patch_cache_control(response, private=True)
    return response


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `Range: bytes=` request, or None for the whole
    file (no header, one we do not read, or several ranges: RFC 9110 lets a server
    answer those with the whole file). A range wholly past the end is a 416."""
    match = _RANGE.fullmatch(header.strip())
    if match is None or not any(match.groups()):
        return None
    start, last = (_position(digits) if digits else None for digits in match.groups())
    if start is None:  # the last N bytes
        if last == 0:
            raise _unsatisfiable(size)
        return max(size - last, 0), size - 1
    if last is not None and last < start:
        return None  # not a valid range: ignored
    if start >= size:
        raise _unsatisfiable(size)
    return start, size - 1 if last is None else min(last, size - 1)


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _POSITION_DIGITS else 10**_POSITION_DIGITS


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(
        "The requested range is outside the file.",
        code=ErrorCode.RANGE_NOT_SATISFIABLE,
        status=416,
        headers={"Content-Range": f"bytes */{size}"},
    )


def _chunks(path: Path, start: int, length: int):
    with path.open("rb") as file:
        file.seek(start)
        while length > 0:
            chunk = file.read(min(CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk
