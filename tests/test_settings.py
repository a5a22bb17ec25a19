"""Settings from the environment: strict parsing, secrets from *_FILE, and a production
start that refuses to run unsafely.

The parsing helpers are called directly; what a start does is seen the way an
operator sees it, by starting Django in a subprocess with a controlled environment and
reading its exit code and message.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from tests.support import ROOT
from voiceplatform.settings import (
    DEV_SECRET_KEY,
    env_bool,
    env_float,
    env_int,
    env_secret,
    refuse_weak_secret_key,
)

STRONG_KEY = secrets.token_urlsafe(50)
SETUP = "import django; django.setup()"


def start(code: str, env: dict[str, str], var_dir: Path, *args: str):
    """Runs python -c code (or manage.py args) with only env set, as a fresh start."""
    command = [sys.executable, *args] if args else [sys.executable, "-c", code]
    return subprocess.run(
        command,
        cwd=ROOT,
        env={
            "PATH": os.environ["PATH"],
            "DJANGO_SETTINGS_MODULE": "voiceplatform.settings",
            "VAR_DIR": str(var_dir),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def secret_file(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content)
    return str(path)


# --- booleans -----------------------------------------------------------------------
@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "Yes", "on", " on "])
def test_it_reads_the_usual_spellings_of_on(monkeypatch, value):
    monkeypatch.setenv("VP_FLAG", value)

    assert env_bool("VP_FLAG", False) is True


@pytest.mark.parametrize("value", ["0", "false", "False", "no", "NO", "off", "\toff\n"])
def test_it_reads_the_usual_spellings_of_off(monkeypatch, value):
    monkeypatch.setenv("VP_FLAG", value)

    assert env_bool("VP_FLAG", True) is False


@pytest.mark.parametrize("value", ["ture", "y", "enabled", "2"])
def test_it_refuses_a_misspelt_boolean_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("VP_FLAG", value)

    with pytest.raises(ImproperlyConfigured) as refused:
        env_bool("VP_FLAG", False)

    assert f"VP_FLAG={value!r} is not a boolean" in str(refused.value)
    assert "1/0, true/false, yes/no or on/off" in str(refused.value)


# --- numbers ------------------------------------------------------------------------
@pytest.mark.parametrize("value", [None, "", "   "])
def test_an_unset_or_empty_variable_keeps_the_default(monkeypatch, value):
    for name in ("VP_FLAG", "VP_COUNT", "VP_SECONDS"):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)

    assert env_bool("VP_FLAG", True) is True
    assert env_int("VP_COUNT", 7) == 7
    assert env_float("VP_SECONDS", 2.5) == 2.5


def test_it_reads_whole_numbers_and_numbers(monkeypatch):
    monkeypatch.setenv("VP_COUNT", " 42 ")
    monkeypatch.setenv("VP_SECONDS", "0.25")

    assert env_int("VP_COUNT", 0) == 42
    assert env_float("VP_SECONDS", 0.0) == 0.25


@pytest.mark.parametrize("value", ["abc", "1.5", "30s"])
def test_it_refuses_what_is_not_a_whole_number(monkeypatch, value):
    monkeypatch.setenv("VP_COUNT", value)

    with pytest.raises(ImproperlyConfigured, match=f"VP_COUNT='{value}' is not a whole number"):
        env_int("VP_COUNT", 0)


@pytest.mark.parametrize("value", ["abc", "1,5", "nan", "inf"])
def test_it_refuses_what_is_not_a_number(monkeypatch, value):
    monkeypatch.setenv("VP_SECONDS", value)

    with pytest.raises(ImproperlyConfigured, match=f"VP_SECONDS='{value}' is not a number"):
        env_float("VP_SECONDS", 1.0)


def test_a_misspelt_boolean_stops_the_start(tmp_path):
    result = start(SETUP, {"SIDEBAND_ENABLED": "ture"}, tmp_path)

    assert result.returncode != 0
    assert "ImproperlyConfigured: SIDEBAND_ENABLED='ture' is not a boolean" in result.stderr


def test_a_negative_retention_stops_the_start(tmp_path):
    result = start(SETUP, {"RETENTION_RECORDING_DAYS": "-1"}, tmp_path)

    assert result.returncode != 0
    assert "RETENTION_RECORDING_DAYS=-1 is negative: use 0 to keep forever" in result.stderr


# --- secrets from files -------------------------------------------------------------
def test_it_reads_a_secret_from_the_file_named_by_its_file_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("VP_TOKEN", raising=False)
    monkeypatch.setenv("VP_TOKEN_FILE", secret_file(tmp_path, "token", "s3cret value\n"))

    assert env_secret("VP_TOKEN", "default") == "s3cret value"


def test_an_empty_secret_variable_counts_as_unset(monkeypatch, tmp_path):
    monkeypatch.setenv("VP_TOKEN", "")
    monkeypatch.setenv("VP_TOKEN_FILE", "")

    assert env_secret("VP_TOKEN", "default") == "default"

    monkeypatch.setenv("VP_TOKEN_FILE", secret_file(tmp_path, "token", "from-file"))

    assert env_secret("VP_TOKEN", "default") == "from-file"


def test_it_refuses_a_secret_set_both_ways(monkeypatch, tmp_path):
    monkeypatch.setenv("VP_TOKEN", "inline")
    monkeypatch.setenv("VP_TOKEN_FILE", secret_file(tmp_path, "token", "from-file"))

    with pytest.raises(ImproperlyConfigured, match="VP_TOKEN and VP_TOKEN_FILE are both set"):
        env_secret("VP_TOKEN")


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda tmp: tmp / "absent", "cannot be read: No such file or directory"),
        (lambda tmp: tmp, "cannot be read: Is a directory"),
        (lambda tmp: tmp / "empty", "is empty"),
        (lambda tmp: tmp / "binary", "is not UTF-8 text"),
    ],
)
def test_it_refuses_a_secret_file_it_cannot_use(monkeypatch, tmp_path, make, problem):
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00")
    path = make(tmp_path)
    monkeypatch.delenv("VP_TOKEN", raising=False)
    monkeypatch.setenv("VP_TOKEN_FILE", str(path))

    with pytest.raises(ImproperlyConfigured) as refused:
        env_secret("VP_TOKEN")

    assert str(refused.value).startswith(f"VP_TOKEN_FILE={str(path)!r} {problem}")


def test_every_secret_setting_may_come_from_a_file(tmp_path):
    secrets_by_name = {
        "SECRET_KEY": STRONG_KEY,
        "DATABASE_URL": "postgres://voice:pw@127.0.0.1:5432/from_file",
        "REDIS_URL": "redis://:pw@127.0.0.1:6379/5",
        "OPENAI_API_KEY": "sk-from-file",
        "OPENAI_WEBHOOK_SECRET": "whsec_b2xk,whsec_bmV3",
        "SIMULATOR_API_KEY": "sk-sim-from-file",
        "SIMULATOR_WEBHOOK_SECRET": "whsec_c2lt",
        "WEB_SEARCH_API_KEY": "search-from-file",
        "AWS_ACCESS_KEY_ID": "AKIAFROMFILE",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-from-file",
    }
    env = {
        f"{name}_FILE": secret_file(tmp_path, name.lower(), f"{value}\n")
        for name, value in secrets_by_name.items()
    }
    show = (
        f"{SETUP}; from django.conf import settings as s;"
        " print(s.SECRET_KEY, s.DATABASES['default']['NAME'], s.REDIS_URL, s.OPENAI_API_KEY,"
        " s.OPENAI_WEBHOOK_SECRETS, s.SIMULATOR_API_KEY, s.SIMULATOR_WEBHOOK_SECRET,"
        " s.WEB_SEARCH_API_KEY, s.AWS_ACCESS_KEY_ID, s.AWS_SECRET_ACCESS_KEY)"
    )

    result = start(show, env, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        STRONG_KEY,
        "from_file",
        "redis://:pw@127.0.0.1:6379/5",
        "sk-from-file",
        "['whsec_b2xk',",
        "'whsec_bmV3']",
        "sk-sim-from-file",
        "whsec_c2lt",
        "search-from-file",
        "AKIAFROMFILE",
        "aws-secret-from-file",
    ]


# --- production ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "is not set"),
        (DEV_SECRET_KEY, "is a development key"),
        ("django-insecure-" + STRONG_KEY, "is a development key"),
        (STRONG_KEY[:49], "is too short or too repetitive"),
        ("abcd" * 20, "is too short or too repetitive"),
    ],
)
def test_production_refuses_a_guessable_secret_key(key, problem):
    with pytest.raises(ImproperlyConfigured, match=f"SECRET_KEY {problem}: PRODUCTION=1 needs"):
        refuse_weak_secret_key(key)


def test_production_accepts_a_long_random_secret_key():
    refuse_weak_secret_key(STRONG_KEY)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SECRET_KEY is not set"),
        ({"SECRET_KEY": DEV_SECRET_KEY}, "SECRET_KEY is a development key"),
        (
            {"SECRET_KEY": STRONG_KEY, "OPENAI_API_KEY": "sk-x", "SIMULATOR_ENABLED": "1"},
            "SIMULATOR_ENABLED is on with PRODUCTION=1",
        ),
    ],
)
def test_production_refuses_to_start_unsafely(tmp_path, env, message):
    result = start(SETUP, {"PRODUCTION": "1", **env}, tmp_path)

    assert result.returncode != 0
    assert f"ImproperlyConfigured: {message}" in result.stderr


def test_production_without_an_api_key_starts_without_the_simulator(tmp_path):
    env = {"PRODUCTION": "1", "SECRET_KEY_FILE": secret_file(tmp_path, "key", STRONG_KEY)}
    show = (
        f"{SETUP}; from django.conf import settings; from django.urls import resolve, Resolver404\n"
        "try:\n    resolve('/simulator/v1/realtime/calls'); print('mounted')\n"
        "except Resolver404:\n    print('absent')\n"
        "print(settings.SIMULATOR_ENABLED, settings.OPENAI_WEBHOOK_SECRETS)"
    )

    result = start(show, env, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["absent", "False", "[]"]


def test_production_refuses_to_serve_the_simulator_on_its_own_port(tmp_path):
    env = {"PRODUCTION": "1", "SECRET_KEY": STRONG_KEY}

    result = start("", env, tmp_path, "manage.py", "simulator", "--port", "1")

    assert result.returncode != 0
    assert "The simulator is never served with PRODUCTION=1." in result.stderr


def test_the_deploy_check_passes_with_production_settings(tmp_path):
    # The environment .ci/run gives `check --deploy`.
    env = {
        "PRODUCTION": "1",
        "SECRET_KEY": f"ci-{STRONG_KEY}",
        "OPENAI_API_KEY": "sk-ci",
        "OPENAI_WEBHOOK_SECRET": "whsec_Y2k=",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "ALLOWED_HOSTS": "voice.example.com",
        "USE_X_FORWARDED_FOR": "1",
        "METRICS_BEARER_TOKEN": "ci-scrape-token",
    }

    result = start("", env, tmp_path, "manage.py", "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


# --- defaults ------------------------------------------------------------------------
def test_a_pod_takes_the_seeds_fifty_live_sessions_by_default(tmp_path):
    show = f"{SETUP}; from django.conf import settings; print(settings.SESSION_CAPACITY)"

    result = start(show, {}, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["50"]
