"""/favicon.ico, which browsers ask for on pages that name no icon: our icon, not a 404."""

from __future__ import annotations

import pytest
from django.test import Client


def test_the_favicon_is_our_icon_not_a_404():
    response = Client().get("/favicon.ico")

    assert response.status_code == 301
    assert response["Location"].endswith(".svg") and "favicon" in response["Location"]


@pytest.mark.django_db
def test_only_get_and_head_are_allowed():
    response = Client().post("/favicon.ico")

    assert response.status_code == 405 and response["Allow"] == "GET, HEAD"
