"""deploy/observability/alerts.yml evaluated by Prometheus's own engine (`promtool test
rules`) on series shaped like the app's: the error rate counts every component's
failures per API request, probes left out, per environment; maintenance is its own
alert."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.deploy.support import DEPLOY

ALERTS = DEPLOY / "observability/alerts.yml"

pytestmark = pytest.mark.skipif(
    not shutil.which("promtool"),
    reason="promtool is not installed (scripts/services.sh installs Debian's prometheus "
    "when run as root)",
)


def expression(alert: str, severity: str) -> str:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    (rule,) = [
        rule
        for group in groups
        for rule in group["rules"]
        if rule["alert"] == alert and rule["labels"]["severity"] == severity
    ]
    return rule["expr"]


def per_minute(series: str, count: float) -> dict:
    """A counter growing by count every minute for 20 minutes."""
    return {"series": series, "values": f"0+{count}x20"}


def evaluate(tmp_path, input_series: list[dict], checks: list[tuple[str, list[dict]]]):
    """Evaluates each expression at minute 15 of the input series; checks is (expression,
    the samples it must give as {labels, value}); promtool's verdict."""
    test = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series,
                "promql_expr_test": [
                    {"expr": expr, "eval_time": "15m", "exp_samples": samples}
                    for expr, samples in checks
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    return subprocess.run(
        ["promtool", "test", "rules", str(tmp_path / "test.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


REQUESTS = (
    "voice_api_request_duration_seconds_count"
    '{{environment="{env}",endpoint="{endpoint}",method="POST",status="201"}}'
)
ERRORS = 'voice_errors_total{{environment="{env}",component="{component}",error_type="x"}}'


def test_the_error_rate_counts_every_components_failures_per_api_request(tmp_path):
    # Production: 1 API request a second (and ten times as many probes and scrapes),
    # failures spread over components making half of that. Staging: 1 request a second,
    # 1/32 of it failing. (Rates that are binary fractions: sums come out exact in any
    # order.)
    series = [
        per_minute(REQUESTS.format(env="production", endpoint="/session"), 60),
        per_minute(REQUESTS.format(env="production", endpoint="/health/ready"), 300),
        per_minute(REQUESTS.format(env="production", endpoint="/metrics"), 300),
        per_minute(ERRORS.format(env="production", component="api"), 15),
        per_minute(ERRORS.format(env="production", component="database"), 7.5),
        per_minute(ERRORS.format(env="production", component="tools"), 3.75),
        per_minute(ERRORS.format(env="production", component="redis"), 3.75),
        per_minute(REQUESTS.format(env="staging", endpoint="/session"), 60),
        per_minute(ERRORS.format(env="staging", component="webhooks"), 1.875),
    ]

    result = evaluate(
        tmp_path,
        series,
        [
            (
                expression("HighErrorRate", "critical"),
                [{"labels": '{environment="production"}', "value": 0.5}],
            ),
            (
                expression("HighErrorRate", "warning"),
                [
                    {"labels": '{environment="production"}', "value": 0.5},
                    {"labels": '{environment="staging"}', "value": 1 / 32},
                ],
            ),
        ],
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_maintenance_is_an_alert_of_its_own_environment(tmp_path):
    series = [
        {"series": 'voice_degradation_level{environment="production",pod="a"}', "values": "4x20"},
        {"series": 'voice_degradation_level{environment="production",pod="b"}', "values": "4x20"},
        {"series": 'voice_degradation_level{environment="staging",pod="c"}', "values": "3x20"},
    ]

    result = evaluate(
        tmp_path,
        series,
        [
            (
                expression("VoiceMaintenance", "info"),
                [{"labels": '{environment="production"}', "value": 4}],
            ),
            (
                expression("ServiceDegraded", "warning"),
                [
                    {"labels": '{environment="production"}', "value": 4},
                    {"labels": '{environment="staging"}', "value": 3},
                ],
            ),
        ],
    )

    assert result.returncode == 0, result.stdout + result.stderr
