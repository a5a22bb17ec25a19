"""Under daphne itself, an oversized body costs the server nothing: a declared
Content-Length over the route's cap is refused before the body is read, and a chunked
body is cut off with 413 as soon as it passes the cap."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from tests.support import embedded_env, free_port, start_server, stop_server

MIB = 1024 * 1024


@pytest.fixture
def daphne(tmp_path):
    port = free_port()
    env = embedded_env(port, tmp_path / "var")
    command = [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "voiceplatform.asgi:application",
    ]
    process = start_server(command, port, env, tmp_path / "server.log")
    yield process, port
    stop_server(process)


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _send_chunked(port: int, total: int) -> tuple[int, bytes]:
    """Posts a chunked JSON body of `total` bytes; returns (bytes sent, the answer)."""
    chunk = b"x" * (256 * 1024)
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /session HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        try:
            while sent < total:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped listening: what we wanted
        answer = b""
        sock.settimeout(5)
        try:
            while data := sock.recv(65536):
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
    return sent, answer


def test_a_chunked_body_past_the_cap_is_cut_off_and_costs_no_memory(daphne):
    process, port = daphne
    before = _rss_mib(process.pid)

    sent, answer = _send_chunked(port, 300 * MIB)
    time.sleep(0.5)
    grown = _rss_mib(process.pid) - before

    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"payload_too_large"' in answer
    assert sent < 300 * MIB  # the server stopped taking it long before the end
    assert grown < 32, f"the server grew by {grown:.0f} MiB"


def test_a_declared_length_past_the_cap_is_refused_before_any_body(daphne):
    _, port = daphne
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 314572800\r\n\r\n"
        )
        answer = sock.recv(65536)

    assert answer.startswith(b"HTTP/1.1 413")


def test_a_body_within_the_cap_still_reaches_the_app(daphne):
    _, port = daphne
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        body = b'{"voice": "robot"}'
        sock.sendall(
            b"POST /session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        answer = b""
        while data := sock.recv(65536):
            answer += data

    assert answer.startswith(b"HTTP/1.1 400") and b"invalid_voice" in answer


def _answer(sock: socket.socket) -> bytes:
    answer = b""
    while data := sock.recv(65536):
        answer += data
    return answer


def test_an_upload_without_a_token_is_refused_before_its_body_is_sent(daphne):
    _, port = daphne
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /session/sess_x/recording HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: audio/ogg\r\nContent-Length: %d\r\n\r\n" % (20 * MIB)
        )
        answer = _answer(sock)  # the body is never sent: the answer comes without it

    assert answer.startswith(b"HTTP/1.1 401") and b'"missing_token"' in answer


def test_a_chunked_upload_with_a_forged_token_is_refused_after_its_first_chunk(daphne):
    _, port = daphne
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /session/sess_x/recording HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer forged.token.value\r\n"
            b"Content-Type: audio/ogg\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nOggS\r\n"
        )
        answer = _answer(sock)  # the rest of the body is never sent

    assert answer.startswith(b"HTTP/1.1 401") and b'"invalid_token"' in answer


def test_a_small_upload_sent_whole_without_a_token_still_gets_its_answer(daphne):
    # A client that writes its whole body before reading: the refusal lets it finish.
    _, port = daphne
    body = b"OggS" + bytes(16 * 1024)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /session/sess_x/recording HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: audio/ogg\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        sock.sendall(body)
        answer = _answer(sock)

    assert answer.startswith(b"HTTP/1.1 401") and b'"missing_token"' in answer


def test_an_upload_without_a_token_that_goes_on_sending_is_cut_off(daphne):
    _, port = daphne
    total, chunk, sent = 20 * MIB, bytes(256 * 1024), 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /session/sess_x/recording HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: audio/ogg\r\nContent-Length: %d\r\n\r\n" % total
        )
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped listening: what we wanted

    assert sent < total
