"""Session tokens: signed for one session, and usable as a WebSocket subprotocol."""

from __future__ import annotations

import re

import pytest
from django.core import signing

from sessions_app import tokens
from voiceplatform.errors import Unauthorized

# RFC 7230 token characters: what a Sec-WebSocket-Protocol value may be made of.
HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def test_a_token_names_its_session_and_is_an_http_token():
    token = tokens.issue("sess_abc")

    assert tokens.session_id_from(token) == "sess_abc"
    assert HTTP_TOKEN.fullmatch(f"bearer.{token}")


def test_a_token_issued_before_the_separator_changed_still_works():
    earlier = signing.dumps({"sid": "sess_abc"}, salt="voiceplatform.session-token")

    assert ":" in earlier and tokens.session_id_from(earlier) == "sess_abc"


@pytest.mark.parametrize("change", ["tamper", "other separator", "garbage"])
def test_an_altered_token_is_refused(change):
    token = tokens.issue("sess_abc")
    altered = {
        "tamper": token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        "other separator": token.replace(".", ":"),
        "garbage": "a.b.c",
    }[change]

    with pytest.raises(Unauthorized) as refused:
        tokens.session_id_from(altered)

    assert refused.value.code == "invalid_token"
