"""Settings from the environment: strict parsing.

The parsing helpers are called directly; what a start does is seen the way an
operator sees it, by starting Django in a subprocess with a controlled environment and
reading its exit code and message.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from voiceplatform.settings import env_bool, env_float, env_int

ROOT = Path(__file__).resolve().parent.parent
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
