"""deploy/docker-compose.yml: valid under the Compose Specification (its JSON schema,
vendored), complete (seed 4.3), and safe by construction."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import jsonschema
import pytest

from tests.deploy.support import DEPLOY, interpolate, load_compose, read_env_file

APP_SERVICES = ("web-1", "web-2", "worker", "beat")


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


def test_it_validates_against_the_compose_specification(compose):
    schema = json.loads((DEPLOY / "schemas/compose-spec.json").read_text())

    jsonschema.Draft7Validator(schema).validate(compose)


def test_it_validates_once_interpolated_with_the_example_env_file(compose):
    schema = json.loads((DEPLOY / "schemas/compose-spec.json").read_text())
    env = read_env_file(DEPLOY / ".env.example") | {"SECRET_KEY": "x" * 50}

    jsonschema.Draft7Validator(schema).validate(interpolate(compose, env))


def test_it_has_every_service_of_the_small_scale_deployment(compose):
    services = compose["services"]

    assert set(services) >= {*APP_SERVICES, "postgres", "redis", "nginx", "migrate", "simulator"}
    assert {
        services["web-1"]["environment"]["POD_NAME"],
        services["web-2"]["environment"]["POD_NAME"],
    } == {"web-1", "web-2"}


def test_every_long_running_service_has_its_own_health_check(compose):
    services = compose["services"]
    checks = {
        name: " ".join(service["healthcheck"]["test"])
        for name, service in services.items()
        if name != "migrate"
    }

    assert "voiceplatform.healthcheck web" in checks["web-1"] == checks["web-2"]
    assert "voiceplatform.healthcheck worker" in checks["worker"]
    assert "voiceplatform.healthcheck beat" in checks["beat"]
    assert "pg_isready" in checks["postgres"] and "redis-cli ping" in checks["redis"]
    assert "/nginx-health" in checks["nginx"] and "/simulator/health/live" in checks["simulator"]


def test_redis_keeps_an_append_only_file_on_a_volume(compose):
    redis = compose["services"]["redis"]

    assert redis["command"][:3] == ["redis-server", "--appendonly", "yes"]
    # And an RDB snapshot every hour when anything changed.
    assert redis["command"][redis["command"].index("--save") + 1] == "3600 1"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert "redis-data" in compose["volumes"]


def test_no_secret_is_written_into_it(compose):
    for name in APP_SERVICES:
        env = compose["services"][name]["environment"]
        # Secrets come from deploy/.env or the shell; only published development
        # defaults (the simulator's) may stand in.
        assert env["SECRET_KEY"] == "${SECRET_KEY:-}"
        assert env["OPENAI_API_KEY"] == "${OPENAI_API_KEY:-sk-sim-local}"
        assert env["OPENAI_WEBHOOK_SECRET"].startswith("${OPENAI_WEBHOOK_SECRET:-")
    assert not (DEPLOY / ".env").exists() or ".env" in (DEPLOY.parent / ".gitignore").read_text()


def test_no_app_process_points_its_upstream_at_a_port_nobody_serves(compose):
    for name in APP_SERVICES:
        env = interpolate(compose["services"][name]["environment"], {})
        assert env["OPENAI_BASE_URL"] == "http://simulator:8100/simulator"
        assert env["OPENAI_WEBHOOK_SECRET"], "an empty webhook secret refuses every webhook"
    simulator = compose["services"]["simulator"]
    assert simulator["command"][-4:] == ["--host", "0.0.0.0", "--port", "8100"]


def test_a_backup_service_dumps_postgres_daily_and_keeps_thirty_days(compose):
    backup = compose["services"]["backup"]

    assert "deploy/scripts/backup-job.sh" in " ".join(backup["command"])
    assert "sleep 86400" in " ".join(backup["command"])
    assert backup["environment"]["BACKUP_RETENTION_DAYS"] == "30"
    assert backup["environment"]["BACKUP_DIR"] == "/backups"
    assert "backups:/backups" in backup["volumes"] and "backups" in compose["volumes"]
    assert backup["build"]["target"] == "backup"
    assert "backups newest" in " ".join(backup["healthcheck"]["test"])


def test_app_containers_run_unprivileged_with_a_read_only_root(compose):
    for name in (*APP_SERVICES, "migrate", "simulator", "backup"):
        service = compose["services"][name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert not service.get("privileged") and not service.get("cap_add")
        assert "user" not in service, "the image's uid 1000 is the user"


def test_only_the_worker_loosens_the_sandbox_profiles_bubblewrap_needs(compose):
    loosened = {
        name: sorted(opt for opt in service.get("security_opt", []) if "unconfined" in opt)
        for name, service in compose["services"].items()
    }

    assert loosened.pop("worker") == [
        "apparmor=unconfined",
        "seccomp=unconfined",
        "systempaths=unconfined",
    ]
    assert not any(loosened.values())


def test_only_nginx_publishes_a_port(compose):
    published = {name for name, service in compose["services"].items() if service.get("ports")}

    assert published == {"nginx"}


def test_app_processes_wait_for_their_data_stores_and_the_migrations(compose):
    for name in APP_SERVICES:
        depends = compose["services"][name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_the_app_owns_the_affinity_cookie_and_nginx_routes_on_its_value(compose):
    conf = (DEPLOY / "nginx/nginx.conf").read_text()

    for name in ("web-1", "web-2"):
        assert compose["services"][name]["environment"]["SESSION_AFFINITY_COOKIE"] == "app"
        assert "map $cookie_VOICE_AFFINITY $voice_backend" in conf
        assert f"{name}   {name};" in conf or f"{name} {name};" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "location = /metrics" in conf


@pytest.mark.skipif(
    not shutil.which("nginx"), reason="nginx is not installed (scripts/services.sh installs it)"
)
def test_nginx_accepts_its_configuration(tmp_path):
    # nginx -t resolves upstream names: the compose service names become loopback here.
    conf = (DEPLOY / "nginx/nginx.conf").read_text()
    conf = re.sub(r"server web-\d:8000", "server 127.0.0.1:8000", conf)
    conf = conf.replace("/tmp/", f"{tmp_path}/")
    (tmp_path / "nginx.conf").write_text(conf)

    result = subprocess.run(
        [
            "nginx",
            "-t",
            "-p",
            str(tmp_path),
            "-c",
            str(tmp_path / "nginx.conf"),
            "-g",
            "error_log stderr;",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
