"""The containers' health checks, run as the container runs them, against the real
processes: daphne with the compose environment (the development defaults, and the
production .env with a public host name that 127.0.0.1 is not), a Celery worker, beat."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from tests.deploy.support import (
    DEPLOY,
    dockerfile_stages,
    exec_form,
    healthcheck_command,
    load_compose,
    read_env_file,
    service_environment,
)
from tests.support import ROOT, database_env, free_port, start_server, stop_server

pytestmark = pytest.mark.django_db(transaction=True)

PRODUCTION_ENV = read_env_file(DEPLOY / ".env.example") | {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "POSTGRES_PASSWORD": "unused-here",
    "ALLOWED_HOSTS": "voice.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://voice.example.com",
}


def container_env(service: str, compose_env: dict[str, str], tmp_path) -> dict[str, str]:
    """The service's environment from the compose file, with this test run's PostgreSQL
    and Redis in place of the compose network's, and the image's own variables."""
    env = service_environment(service, compose_env)
    static = tmp_path / "static"
    static.mkdir(exist_ok=True)
    return {
        **env,
        **database_env(connection.settings_dict),
        "DJANGO_SETTINGS_MODULE": "voiceplatform.settings",
        # The image puts its virtualenv first on PATH: "python" is the app's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "VAR_DIR": str(tmp_path / "var"),
        "STATIC_ROOT": str(static),
    }


def run_check(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


def dockerfile_healthcheck(stage: str) -> list[str]:
    (arguments,) = [args for op, args in dockerfile_stages()[stage] if op == "HEALTHCHECK"]
    return exec_form(arguments)


@pytest.mark.parametrize(
    "compose_env", [{}, PRODUCTION_ENV], ids=["compose-defaults", "production-env"]
)
def test_the_web_health_check_passes_against_daphne(compose_env, tmp_path):
    port = free_port()
    env = container_env("web-1", compose_env, tmp_path) | {"PORT": str(port)}
    compose_check = healthcheck_command(load_compose()["services"]["web-1"]["healthcheck"]["test"])
    server = start_server(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "voiceplatform.asgi:application",
        ],
        port,
        env,
        tmp_path / "daphne.log",
    )
    try:
        from_compose = run_check(compose_check, env)
        from_image = run_check(dockerfile_healthcheck("web"), env)
    finally:
        stop_server(server)
    after_stop = run_check(compose_check, env)

    assert from_compose.returncode == 0, from_compose.stdout + from_compose.stderr
    assert from_image.returncode == 0, from_image.stdout + from_image.stderr
    assert after_stop.returncode == 1 and "/health/live" in after_stop.stdout


def _wait_for_check(command, env, process, log, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}: {log.read_text()[-2000:]}")
        result = run_check(command, env)
        if result.returncode == 0:
            return result
        time.sleep(0.5)
    raise AssertionError(f"never healthy: {result.stdout}{log.read_text()[-2000:]}")


@pytest.mark.parametrize(
    ("service", "argv"),
    [
        ("worker", ["worker", "-P", "prefork", "-c", "1", "--without-gossip", "--without-mingle"]),
        ("beat", ["beat", "--schedule"]),
    ],
)
def test_worker_and_beat_health_checks_follow_their_heartbeats(service, argv, tmp_path):
    env = container_env(service, PRODUCTION_ENV, tmp_path) | {"HEARTBEAT_INTERVAL_SECONDS": "1"}
    if service == "beat":
        argv = [*argv, str(tmp_path / "celerybeat-schedule")]
    else:
        argv = [*argv, "-n", f"health-{secrets.token_hex(3)}@%h"]
    compose_check = healthcheck_command(load_compose()["services"][service]["healthcheck"]["test"])
    log = tmp_path / f"{service}.log"
    before = run_check(compose_check, env)
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "voiceplatform", *argv, "-l", "info"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        healthy = _wait_for_check(compose_check, env, process, log)
        from_image = run_check(dockerfile_healthcheck(service), env)
        # Stuck: no more heartbeats. (SIGSTOP freezes the loop as a hang would.)
        process.send_signal(19)
        stale = None
        for _ in range(30):
            time.sleep(0.5)
            stale = run_check(compose_check, env | {"HEARTBEAT_MAX_AGE_SECONDS": "3"})
            if stale.returncode:
                break
        process.send_signal(18)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    assert before.returncode == 1 and "has not started" in before.stdout
    assert healthy.stdout.strip() == f"{service}: healthy"
    assert from_image.returncode == 0, from_image.stdout + from_image.stderr
    assert stale.returncode == 1 and "last touched its heartbeat" in stale.stdout
