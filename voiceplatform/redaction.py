"""Redaction at write time: secrets and common personal data in transcripts and tool
outputs are replaced by "[redacted:<kind>]" before they are stored.

Two switches (settings, read on each call): REDACT_SECRETS (API keys, tokens,
passwords, also in URLs, private keys, card numbers) and REDACT_PII (e-mail addresses,
phone numbers). Patterns lean towards leaving text alone: identifiers (sess_…, call_…,
item_…), timestamps, dates, IP addresses, versions and column output are not touched;
tests/redaction_corpus.json lists what is caught and what is left.

Replacements hold no digits, "@" or key prefixes, so redacting twice changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from django.conf import settings

SECRETS = ("private_key", "api_key", "token", "secret", "card")
PII = ("email", "phone")


def _label(kind: str) -> str:
    return f"[redacted:{kind}]"


# PEM (RSA, EC, OPENSSH, PKCS#8, ENCRYPTED) and PGP armour ("PRIVATE KEY BLOCK").
_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY(?: BLOCK)?-----.*?"
    r"(?:-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    re.S,
)
# Key formats with a recognisable prefix: ours (vpk_<lookup>_<secret>), OpenAI (sk-,
# sk-proj-; at least one digit, so words like "sk-learn-based-pipelines" stay), webhook
# secrets, AWS access key ids, GitHub, GitLab, Slack, Google, Stripe, Hugging Face and
# npm keys. Hugging Face and npm keys end where a word does, so identifiers such as
# hf_hub_download or npm_config_registry stay.
_API_KEY = re.compile(
    r"(?<![\w-])(?:"
    r"vpk_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}"
    r"|sk-(?:proj-|svcacct-|admin-)?(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,}"
    r"|whsec_[A-Za-z0-9+/=]{20,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}"
    r"|github_pat_[A-Za-z0-9_]{40,}"
    r"|glpat-[A-Za-z0-9_-]{20,}(?:\.[A-Za-z0-9_-]+)*"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|hf_[A-Za-z0-9]{30,}(?![\w-])"
    r"|npm_[A-Za-z0-9]{36}(?![\w-])"
    r")"
)
# Bearer, Basic and Token credentials (with a digit: "Bearer responsibilities" is prose),
# JSON Web Tokens and Django-signed tokens such as our session tokens (payload:time:sig).
_BEARER = re.compile(
    r"(?i)(?<![\w-])((?:bearer|authorization:\s*(?:basic|token))\s+)"
    r"(?=[A-Za-z._~+/-]*\d)[A-Za-z0-9._~+/-]{16,}=*"
)
_JWT = re.compile(
    r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}"
    r"(?:\.eyJ[A-Za-z0-9_-]{8,}\.|:[A-Za-z0-9]{4,}:)[A-Za-z0-9_-]{8,}"
)
# name = value, name: value, "name": "value" where the name ends in a secret's word
# (OPENAI_API_KEY, AWS_SECRET_ACCESS_KEY, db_password, csrf_token); values of 6
# characters or more with a digit or symbol in them ("the secret: patience" is prose);
# the name stays so the text still reads.
_VALUE = r"[^\s\"'`,;\\\[\]<>(){}]"
_ASSIGNED = re.compile(
    r"(?i)("  # the name's start (OPENAI_, db_) is left as it is, outside the match
    r"(?:api[_-]?key|access[_-]?key|secret[_-]?key|private[_-]?key|secret|token|passwd|"
    r"password|pwd)"
    r"(?![\w-])[\"']?\s*[:=]\s*[\"']?)"
    rf"(?={_VALUE}*[^A-Za-z\s\"'`,;\\\[\]<>(){{}}]){_VALUE}{{6,}}"
)
# The password in a URL's user information (postgres://user:password@host/db,
# redis://:password@host); the scheme, user and host stay. As in URL parsers the host
# follows the last "@" before the path, so a password may hold an "@"; a port is not a
# password, as a path and not "@" follows it. No "[" in the user, so an already
# redacted key before "@" is left alone.
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s:/?#@\[\]]*:)[^\s/?#]+(?=@)")
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@(?!\d+x\.)"  # not icon@2x.png
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
# Card numbers: 13-19 digits together, or grouped as printed (4-4-4-4[-1..3], 4-6-5,
# 4-6-4) with one kind of separator (space, dash or dot); issuer digit 2-6 and a valid
# Luhn check digit.
_CARD = re.compile(
    r"(?<![\w.+-])(?<!\d[.,])(?:"
    r"\d{13,19}"
    r"|\d{4}([ .-])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?"
    r"|\d{4}([ .-])\d{6}\2\d{4,5}"
    r")(?![\w-]|[.,]\d)"
)
# Phone numbers: international (+ and 8-15 digits, single separators), national with
# an area code in brackets, North American 3-3-4, and trunk-0 national numbers
# (020 7946 0958, 07700 900123, 06 12 34 56 78, 030 12345678).
_PHONE = re.compile(
    r"(?<![\w+.-])(?>"
    r"\+[1-9]\d{0,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){1,6}"
    r"|\(\d{2,5}\)[ .-]?\d{3,4}[ .-]?\d{3,4}"
    r"|\d{3}([-. ])\d{3}\1\d{4}"
    r"|0[1-9]\d{0,3}[ /-]\d{3,8}(?:[ -]\d{2,4}){0,2}"
    r"|0[1-9](?:[ .]\d{2}){4}"
    r")(?![\w-]|[.:,/]\d)"
)


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if 13 <= len(digits) <= 19 and digits[0] in "23456" and _luhn(digits):
        return _label("card")
    return match.group(0)


def _phone(match: re.Match) -> str:
    text = match.group(0)
    digits = re.sub(r"\D", "", text)
    if text.startswith("+"):
        ok = 8 <= len(digits) <= 15
    elif text.startswith("0"):
        ok = 9 <= len(digits) <= 12
    else:
        ok = 10 <= len(digits) <= 11
    return _label("phone") if ok else text


# In order: whole blocks first, then the narrowest patterns, so a broader one never
# sees (and half-matches) a narrower one's text.
_RULES: tuple[tuple[str, re.Pattern, str | Callable[[re.Match], str]], ...] = (
    ("private_key", _PRIVATE_KEY, _label("private_key")),
    ("api_key", _API_KEY, _label("api_key")),
    ("token", _JWT, _label("token")),
    ("token", _BEARER, r"\1" + _label("token")),
    ("secret", _URL_PASSWORD, r"\1" + _label("secret")),
    ("secret", _ASSIGNED, r"\1" + _label("secret")),
    ("email", _EMAIL, _label("email")),
    ("card", _CARD, _card),
    ("phone", _PHONE, _phone),
)


def enabled_kinds() -> frozenset[str]:
    """What the settings ask to redact now."""
    kinds: set[str] = set()
    if settings.REDACT_SECRETS:
        kinds.update(SECRETS)
    if settings.REDACT_PII:
        kinds.update(PII)
    return frozenset(kinds)


def redact(text: str, kinds: frozenset[str] | None = None) -> str:
    """text with what kinds names (default: what the settings enable) replaced."""
    kinds = enabled_kinds() if kinds is None else kinds
    if not text or not kinds:
        return text
    for kind, pattern, replacement in _RULES:
        if kind in kinds:
            text = pattern.sub(replacement, text)
    return text


def redact_fields(fields: dict, names: tuple[str, ...] = ("text",)) -> dict:
    """fields with the string values under names redacted (a copy when any changed)."""
    kinds = enabled_kinds()
    if not kinds:
        return fields
    return {
        name: redact(value, kinds) if name in names and isinstance(value, str) else value
        for name, value in fields.items()
    }


def storable(text: str) -> str:
    """Text PostgreSQL can hold: no NUL characters, no lone surrogates."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
