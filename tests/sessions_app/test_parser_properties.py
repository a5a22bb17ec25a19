"""Properties of the parsers hostile input meets first, over generated input: the SDP
offer check, the webhook signature headers and the session token. Each raises nothing
but its documented error on any input, and what a signer makes verifies while any
change to it does not."""

from __future__ import annotations

import base64
import json
import time

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sessions_app import offers, tokens, webhooks
from sessions_app.simulator import sign_webhook
from voiceplatform.errors import BadRequest, ErrorCode, Unauthorized

SECRET = "whsec_" + base64.b64encode(b"property-webhook-secret-012345").decode()
PROPERTIES = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# Header values as HTTP carries them: latin-1 text without line breaks.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80)
# Any text at all, lone surrogates included (a JSON string can carry one).
any_text = st.text(max_size=200)
# Text an event may hold (the JSON check refuses NUL and lone surrogates by design).
event_text = st.text(st.characters(min_codepoint=1, exclude_categories=["Cs"]), max_size=60)


def _mutate(data, text: str) -> str:
    """text with one character replaced, inserted or removed; never text itself."""
    position = data.draw(st.integers(0, len(text)), label="position")
    how = data.draw(st.sampled_from(["replace", "insert", "delete"]), label="how")
    char = data.draw(st.characters(min_codepoint=0x20, max_codepoint=0x7E), label="char")
    if how == "insert" or not text:
        changed = text[:position] + char + text[position:]
    elif how == "delete":
        position = min(position, len(text) - 1)
        changed = text[:position] + text[position + 1 :]
    else:
        position = min(position, len(text) - 1)
        changed = text[:position] + char + text[position + 1 :]
    assume(changed != text)
    return changed


# --- the SDP offer ---------------------------------------------------------------------


@PROPERTIES
@given(st.binary(max_size=400) | any_text.map(lambda text: text.encode("utf-8", "surrogatepass")))
def test_an_offer_is_taken_as_crlf_text_or_refused_as_invalid_sdp(body):
    try:
        text = offers.offer_text(body)
    except BadRequest as refused:
        assert refused.status == 400 and refused.code == ErrorCode.INVALID_SDP
        return

    assert text.startswith("v=0") and "\r\nm=" in text
    assert "\n" not in text.replace("\r\n", "")
    assert offers.offer_text(text.encode()) == text  # taking it again changes nothing


@PROPERTIES
@given(st.lists(st.sampled_from(["v=0", "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=x"]), max_size=6))
def test_an_offer_with_any_line_ends_comes_out_with_crlf(lines):
    for end in ("\n", "\r\n"):
        body = end.join(lines).encode()
        try:
            text = offers.offer_text(body)
        except BadRequest:
            assert not (body.startswith(b"v=0") and b"\nm=" in body)
            continue
        assert text == "\r\n".join(lines)


# --- the webhook signature headers --------------------------------------------------------

events = st.fixed_dictionaries(
    {
        "type": event_text,
        "data": st.dictionaries(event_text, event_text, max_size=3),
    }
)
webhook_ids = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
)
# What else a webhook-signature header may carry: other versions, junk, other signatures.
other_entries = st.lists(
    st.one_of(
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=50),
        st.binary(min_size=32, max_size=32).map(lambda raw: "v1," + base64.b64encode(raw).decode()),
        st.just("v1a,abc"),
        st.just("v2"),
    ),
    max_size=4,
)


def _signed(event: dict, webhook_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event)
    headers = sign_webhook(SECRET, webhook_id, int(time.time()), body)
    return body.encode(), {name: value for name, value in headers.items() if name != "content-type"}


@override_settings(OPENAI_WEBHOOK_SECRETS=[SECRET])
@PROPERTIES
@given(events, webhook_ids, other_entries, st.randoms(use_true_random=False))
def test_a_signed_webhook_verifies_among_any_other_signature_entries(
    event, webhook_id, others, random
):
    body, headers = _signed(event, webhook_id)
    entries = [headers["webhook-signature"], *others]
    random.shuffle(entries)
    headers["webhook-signature"] = " ".join(entries)

    assert webhooks.verify(body, headers) == json.loads(body)


@override_settings(OPENAI_WEBHOOK_SECRETS=[SECRET])
@PROPERTIES
@given(events, webhook_ids, st.sampled_from(["body", "id", "timestamp", "signature"]), st.data())
def test_no_change_to_a_signed_webhook_verifies(event, webhook_id, part, data):
    body, headers = _signed(event, webhook_id)
    if part == "body":
        body = _mutate(data, body.decode()).encode()
    else:
        name = {"id": "webhook-id", "timestamp": "webhook-timestamp"}.get(part, "webhook-signature")
        headers[name] = _mutate(data, headers[name])

    with pytest.raises(BadRequest) as refused:
        webhooks.verify(body, headers)

    assert refused.value.code == ErrorCode.INVALID_SIGNATURE


@override_settings(OPENAI_WEBHOOK_SECRETS=[SECRET])
@PROPERTIES
@given(
    st.binary(max_size=200),
    st.fixed_dictionaries(
        {},
        optional={
            "webhook-id": header_text | any_text,
            "webhook-timestamp": header_text | st.integers().map(str) | st.floats().map(str),
            "webhook-signature": header_text | any_text | other_entries.map(" ".join),
        },
    ),
)
def test_any_webhook_headers_are_refused_with_400_only(body, headers):
    with pytest.raises(BadRequest) as refused:
        webhooks.verify(body, headers)

    assert refused.value.status == 400


# --- the session token ------------------------------------------------------------------


@PROPERTIES
@given(any_text)
def test_any_string_as_a_token_is_refused_with_401_only(token):
    with pytest.raises(Unauthorized) as refused:
        tokens.session_id_from(token)

    assert refused.value.code in (
        ErrorCode.MISSING_TOKEN,
        ErrorCode.INVALID_TOKEN,
        ErrorCode.TOKEN_EXPIRED,
    )


@PROPERTIES
@given(any_text, st.data())
def test_a_token_names_its_session_and_no_change_to_it_does(session_id, data):
    token = tokens.issue(session_id)
    changed = _mutate(data, token)

    assert tokens.session_id_from(token) == session_id
    with pytest.raises(Unauthorized):
        tokens.session_id_from(changed)
