"""Redaction at write time (voiceplatform.redaction): the corpus's secrets and personal
data are caught, and what merely looks like them is left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voiceplatform import redaction

CORPUS = json.loads((Path(__file__).parent / "redaction_corpus.json").read_text())
EVERYTHING = frozenset(redaction.SECRETS + redaction.PII)


@pytest.mark.parametrize("case", CORPUS["caught"], ids=lambda case: case["text"][:40])
def test_it_catches_the_corpus_secrets(case):
    assert redaction.redact(case["text"], EVERYTHING) == case["expect"]


@pytest.mark.parametrize("text", CORPUS["left"], ids=lambda text: text[:40])
def test_it_leaves_what_only_looks_like_a_secret(text):
    assert redaction.redact(text, EVERYTHING) == text


def test_the_corpus_covers_every_kind():
    assert {case["kind"] for case in CORPUS["caught"]} >= EVERYTHING


@pytest.mark.parametrize("case", CORPUS["caught"], ids=lambda case: case["text"][:40])
def test_redacting_twice_changes_nothing_more(case):
    once = redaction.redact(case["text"], EVERYTHING)

    assert redaction.redact(once, EVERYTHING) == once


def test_the_settings_choose_what_is_redacted(settings):
    text = "key sk-proj-0123456789abcdefghij, mail jane@example.com"
    settings.REDACT_SECRETS, settings.REDACT_PII = True, False
    assert redaction.redact(text) == "key [redacted:api_key], mail jane@example.com"
    settings.REDACT_SECRETS, settings.REDACT_PII = False, True
    assert redaction.redact(text) == "key sk-proj-0123456789abcdefghij, mail [redacted:email]"
    settings.REDACT_SECRETS, settings.REDACT_PII = False, False
    assert redaction.redact(text) == text


def test_redacted_json_arguments_stay_json():
    command = 'export TOKEN=abc123xyz\\"; curl -u jane@example.com'
    arguments = json.dumps({"command": command, "card": "4111 1111 1111 1111"})

    redacted = redaction.redact(arguments, EVERYTHING)

    assert json.loads(redacted) == {
        "command": 'export TOKEN=[redacted:secret]\\"; curl -u [redacted:email]',
        "card": "[redacted:card]",
    }
