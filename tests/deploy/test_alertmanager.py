"""deploy/observability/alertmanager.yml: amtool accepts it, every alert of alerts.yml
reaches the receiver its severity names (critical PagerDuty, warning Slack, info
e-mail), receivers read their secrets from files, and Alertmanager itself, run on
loopback, silences what the inhibitions say: maintenance the rest of its environment,
a critical alert its own warning tier."""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx
import pytest
import yaml

from tests.deploy.support import DEPLOY
from tests.support import free_port

OBSERVABILITY = DEPLOY / "observability"
ALERTMANAGER = OBSERVABILITY / "alertmanager.yml"
SECRETS_DIR = "/etc/alertmanager/secrets/voice-alertmanager/"
# The integration each severity is meant to reach (seed 8.1).
INTEGRATION = {"critical": "pagerduty_configs", "warning": "slack_configs", "info": "email_configs"}
# Secrets a receiver could hold inline, each with the *_file twin it must use instead.
INLINE_SECRETS = {
    "routing_key": "routing_key_file",
    "service_key": "service_key_file",
    "api_url": "api_url_file",
    "auth_password": "auth_password_file",
    "smtp_auth_password": "smtp_auth_password_file",
}

needs_amtool = pytest.mark.skipif(
    not shutil.which("amtool"),
    reason="amtool is not installed (scripts/services.sh installs Debian's "
    "prometheus-alertmanager when run as root)",
)
needs_alertmanager = pytest.mark.skipif(
    not shutil.which("prometheus-alertmanager"),
    reason="Alertmanager is not installed (scripts/services.sh installs Debian's "
    "prometheus-alertmanager when run as root)",
)


def config() -> dict:
    return yaml.safe_load(ALERTMANAGER.read_text())


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def amtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["amtool", *args], capture_output=True, text=True, timeout=60, check=False
    )


@needs_amtool
def test_amtool_accepts_the_configuration():
    result = amtool("check-config", str(ALERTMANAGER))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_amtool
def test_every_alert_reaches_the_integration_its_severity_names():
    receivers = {receiver["name"]: receiver for receiver in config()["receivers"]}
    reached = {}
    for rule in alert_rules():
        labels = {**rule["labels"], "alertname": rule["alert"], "environment": "production"}
        result = amtool(
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER}",
            *(f"{name}={value}" for name, value in labels.items()),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        receiver = result.stdout.strip()
        reached[(rule["alert"], rule["labels"]["severity"])] = set(receivers[receiver]) - {"name"}

    assert {severity for _, severity in reached} == set(INTEGRATION)
    assert {
        alert: integrations
        for alert, integrations in reached.items()
        if integrations != {INTEGRATION[alert[1]]}
    } == {}


def test_receivers_read_every_secret_from_a_file():
    loaded = config()
    settings = [loaded["global"]] + [
        integration
        for receiver in loaded["receivers"]
        for key, integrations in receiver.items()
        if key != "name"
        for integration in integrations
    ]
    files = {value for each in settings for key, value in each.items() if key.endswith("_file")}
    documented = (DEPLOY / "README.md").read_text()

    assert [key for each in settings for key in each if key in INLINE_SECRETS] == []
    assert {"routing_key_file", "api_url_file", "smtp_auth_password_file"} <= {
        key for each in settings for key in each
    }
    assert all(path.startswith(SECRETS_DIR) for path in files), files
    assert all(path.removeprefix(SECRETS_DIR) in documented for path in files)


def test_prometheus_labels_every_job_with_the_environment_alerts_are_grouped_by():
    prometheus = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    unlabelled = []
    for job in prometheus["scrape_configs"]:
        relabelled = any(
            rule.get("target_label") == "environment" for rule in job.get("relabel_configs", [])
        )
        static = job.get("static_configs", [])
        if not relabelled and not (
            static and all("environment" in group.get("labels", {}) for group in static)
        ):
            unlabelled.append(job["job_name"])

    assert unlabelled == []
    assert "environment" in config()["route"]["group_by"]
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]


# --- Alertmanager itself ------------------------------------------------------------
@pytest.fixture
def alertmanager(tmp_path):
    """Alertmanager on loopback with alertmanager.yml's routes and inhibitions; its
    receivers keep their names but lose their integrations, so nothing is sent out."""
    loaded = config()
    loaded["global"] = {"resolve_timeout": loaded["global"]["resolve_timeout"]}
    loaded["receivers"] = [{"name": receiver["name"]} for receiver in loaded["receivers"]]
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(loaded))
    port = free_port()
    process = subprocess.Popen(
        [
            "prometheus-alertmanager",
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip: one instance, no other port
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"Alertmanager did not start: {process.stderr.read().decode()}")
        time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(10)


def fire(url: str, *alerts: dict[str, str]) -> dict[tuple[str, str, str], list[str]]:
    """Posts alerts (label sets) as Prometheus does; then (alertname, severity,
    environment) -> the alerts inhibiting it, once Alertmanager has seen them all and
    its inhibitor has taken in the sources (within 10 s)."""
    posted = httpx.post(f"{url}/api/v2/alerts", json=[{"labels": labels} for labels in alerts])
    assert posted.status_code == 200, posted.text
    deadline = time.monotonic() + 10
    while True:
        shown = httpx.get(f"{url}/api/v2/alerts").json()
        inhibited = {
            (a["labels"]["alertname"], a["labels"]["severity"], a["labels"]["environment"]): (
                sorted(a["status"]["inhibitedBy"])
            )
            for a in shown
        }
        settled = len(shown) == len(alerts) and any(inhibited.values())
        if settled or time.monotonic() > deadline:
            return inhibited
        time.sleep(0.1)


def alert(name: str, severity: str, environment: str) -> dict[str, str]:
    return {"alertname": name, "severity": severity, "environment": environment}


@needs_alertmanager
def test_maintenance_silences_every_other_alert_of_its_environment_only(alertmanager):
    inhibited = fire(
        alertmanager,
        alert("VoiceMaintenance", "info", "production"),
        alert("VoiceServerDown", "critical", "production"),
        alert("ServiceDegraded", "warning", "production"),
        alert("VoiceServerDown", "critical", "staging"),
    )

    silenced = {key for key, by in inhibited.items() if by}
    assert silenced == {
        ("VoiceServerDown", "critical", "production"),
        ("ServiceDegraded", "warning", "production"),
    }


@needs_alertmanager
def test_a_critical_alert_silences_its_own_warning_tier_not_other_warnings(alertmanager):
    inhibited = fire(
        alertmanager,
        alert("HighErrorRate", "critical", "production"),
        alert("HighErrorRate", "warning", "production"),
        alert("HighLatency", "warning", "production"),
        alert("HighErrorRate", "warning", "staging"),
    )

    silenced = {key for key, by in inhibited.items() if by}
    assert silenced == {("HighErrorRate", "warning", "production")}
