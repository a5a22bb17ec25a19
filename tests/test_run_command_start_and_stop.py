"""What `make run` prints and how it stops, in the embedded default: one start-up line
with the URL it serves, no broker chatter, periodic runs that found nothing to do only
at DEBUG, and Ctrl-C (SIGINT to its process group) ends it with status 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import httpx
import pytest

from tests.support import ROOT, embedded_env, free_port, start_server, stop_server

SWEEP = "sessions_app.tasks.expire_sessions_task"


def log_lines(path) -> list[dict]:
    """The JSON lines of the log (daphne's access log lines are plain text)."""
    lines = []
    for raw in path.read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The run command in the embedded default (LOG_LEVEL=DEBUG, to see what INFO
    hides), with a session left to expire; stopped by SIGINT to its process group once
    the sweep expired it and ran again. (port, exit status, raw log, JSON lines)."""
    tmp = tmp_path_factory.mktemp("run")
    port = free_port()
    env = {
        **embedded_env(port, tmp / "var"),
        "LOG_LEVEL": "DEBUG",
        # The sweep every second; a session never connected expires after 2 s.
        "SESSION_EXPIRY_SWEEP_SECONDS": "1",
        "SESSION_CONNECT_GRACE_SECONDS": "2",
    }
    log = tmp / "server.log"
    process = start_server(["bash", str(ROOT / "scripts/run.sh")], port, env, log)
    try:
        created = httpx.post(f"http://127.0.0.1:{port}/session", json={}, timeout=20)
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 60
        while True:
            runs = [
                line
                for line in log_lines(log)
                if line["event"] == "periodic_task_ran" and line["task"] == SWEEP
            ]
            expired_at = next((i for i, run in enumerate(runs) if run["result"]), None)
            if expired_at is not None and len(runs) > expired_at + 1:
                break
            assert time.monotonic() < deadline, f"the sweep did not expire it and run on: {runs}"
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGINT)
        try:
            status = process.wait(60)
        except subprocess.TimeoutExpired:
            status = None
    finally:
        stop_server(process)
    return port, status, log.read_text(), log_lines(log)


def test_ctrl_c_stops_the_run_command_with_status_0_and_no_traceback(run):
    _, status, text, _ = run

    assert status == 0, text[-3000:]
    assert "Traceback" not in text


def test_start_up_prints_one_line_with_the_url_served(run):
    port, _, _, lines = run

    serving = [line for line in lines if line["event"] == "serving"]

    assert serving == [
        {
            "event": "serving",
            "url": f"http://127.0.0.1:{port}/",
            "level": "info",
            "logger": "daphne.server",
            "timestamp": serving[0]["timestamp"],
        }
    ]
    # None of daphne's other start-up lines (endpoint, HTTP/2 support).
    assert [line for line in lines if line.get("logger", "").startswith("daphne")] == serving


def test_the_embedded_broker_says_nothing(run):
    _, _, text, lines = run

    assert "No hostname was supplied" not in text
    assert [line for line in lines if line.get("logger", "").startswith("kombu")] == []


def test_periodic_runs_log_at_info_only_when_they_did_something(run):
    _, _, _, lines = run
    runs = [line for line in lines if line["event"] == "periodic_task_ran"]

    assert {(line["result"] > 0, line["level"]) for line in runs} == {
        (False, "debug"),
        (True, "info"),
    }
    assert [
        line["event"]
        for line in lines
        if line.get("logger") == "celery.app.trace" and SWEEP in line["event"]
    ] == []
