"""deploy/scripts: shell that parses (and passes shellcheck), and a runbook whose every
script and management command exists."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from django.core.management import get_commands

from tests.deploy.support import DEPLOY, ROOT

SCRIPTS = [*sorted((DEPLOY / "scripts").glob("*.sh")), ROOT / "scripts" / "cluster.sh"]
RUNBOOK = DEPLOY / "RUNBOOK.md"
# Referenced by the runbook and the manifests, written by another issue.
# Commands a runbook may name before the app has them (none today).
PENDING_COMMANDS: dict[str, str] = {}
SEED_SCENARIOS = [
    "Single pod failure",
    "Node failure",
    "Database failure",
    "Region failure",
    "Security incident",
]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_every_script_parses_and_is_executable(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
    assert script.stat().st_mode & 0o111
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script.read_text()


@pytest.mark.skipif(
    not shutil.which("shellcheck"),
    reason="shellcheck is not installed (scripts/services.sh installs it)",
)
def test_shellcheck_finds_nothing():
    result = subprocess.run(
        ["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stdout


def test_the_runbook_covers_the_seeds_five_scenarios_and_the_procedures():
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), re.MULTILINE)
    text = " ".join(headings).lower()

    for scenario in SEED_SCENARIOS:
        assert scenario.lower() in text, scenario
    for procedure in (
        "backup",
        "restore",
        "redis",
        "secret rotation",
        "region failover",
        "maintenance",
        "drain",
    ):
        assert procedure in text, procedure


def test_every_script_the_docs_name_exists():
    for doc in (RUNBOOK, DEPLOY / "README.md", ROOT / "README.md"):
        for path in re.findall(r"deploy/scripts/[\w.-]+\.sh", doc.read_text()):
            assert (ROOT / path).exists(), f"{doc.name} names {path}"


def _runbook_commands() -> list:
    names = sorted(set(re.findall(r"manage\.py (\w+)", RUNBOOK.read_text())))
    return [
        pytest.param(
            name,
            marks=[pytest.mark.xfail(strict=True, reason=PENDING_COMMANDS[name])]
            if name in PENDING_COMMANDS
            else [],
        )
        for name in names
    ]


@pytest.mark.parametrize("command", _runbook_commands())
def test_every_management_command_the_runbook_names_exists(command):
    assert command in get_commands()
