"""ws /ws/ops/: the dashboard's sections, live, for those who may view the dashboard."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser, Permission, User
from django.test import Client

from ops_app import actions, consumers, dashboard
from ops_app.consumers import OpsDashboardConsumer

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def _user(username: str, *codenames: str, is_staff: bool = True) -> User:
    # Staff, as everyone who signs in through the admin is.
    user = User.objects.create_user(username, password="pw", is_staff=is_staff)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="ops_app", codename__in=codenames)
    )
    return User.objects.get(pk=user.pk)  # without the permission cache


def _socket(user) -> WebsocketCommunicator:
    socket = WebsocketCommunicator(OpsDashboardConsumer.as_asgi(), "/ws/ops/")
    socket.scope["user"] = user
    return socket


@pytest.fixture
def fast_pushes(monkeypatch):
    monkeypatch.setattr(consumers, "PUSH_SECONDS", 0.2)


async def _until(socket, check, limit: int = 50) -> dict:
    """The first update whose sections satisfy check."""
    for _ in range(limit):
        update = await socket.receive_json_from(timeout=5)
        if check(update["html"]):
            return update
    raise AssertionError("no matching update")


@pytest.mark.parametrize(
    "who",
    ["anonymous", "no permission", "staff without permission", "permission without staff"],
)
async def test_it_refuses_anyone_who_may_not_view_the_dashboard(who):
    if who == "anonymous":
        user = AnonymousUser()
    elif who == "permission without staff":
        user = await _user("someone", "view_operations", is_staff=False)
    else:
        user = await _user("someone", is_staff=who.startswith("staff"))
    socket = _socket(user)

    connected, code = await socket.connect()

    assert (connected, code) == (False, 4403)


async def test_a_viewer_gets_every_section_without_forms():
    socket = _socket(await _user("viewer", "view_operations"))

    connected, _ = await socket.connect()
    update = await socket.receive_json_from(timeout=5)
    await socket.disconnect()

    assert connected and update["type"] == "ops.update"
    assert list(update["html"]) == list(dashboard.SECTIONS)
    assert all(f'id="{section}"' in html for section, html in update["html"].items())
    assert "<form" not in "".join(update["html"].values())


async def test_an_operator_gets_the_forms_without_a_csrf_token_of_the_sockets_own():
    socket = _socket(await _user("operator", "view_operations", "operate"))

    await socket.connect()
    update = await socket.receive_json_from(timeout=5)
    await socket.disconnect()

    html = update["html"]["ops-maintenance"]
    assert 'action="/ops/maintenance"' in html
    assert "csrfmiddlewaretoken" not in html  # the page adds its own


async def test_it_pushes_the_change_an_operator_made(fast_pushes):
    operator = await _user("operator", "view_operations", "operate")
    socket = _socket(await _user("viewer", "view_operations"))
    await socket.connect()
    first = await socket.receive_json_from(timeout=5)

    await actions.maintenance_on(actor=operator, message="Upgrading the database", eta="16:00")
    update = await _until(socket, lambda html: "ops-maintenance" in html)
    await socket.disconnect()

    assert "Off" in first["html"]["ops-maintenance"]
    assert "Upgrading the database" in update["html"]["ops-maintenance"]
    assert "16:00" in update["html"]["ops-maintenance"]
    assert "Maintenance On" in update["html"]["ops-audit"]
    assert "maintenance" in update["html"]["ops-level"]


async def test_it_sends_only_the_sections_that_changed(fast_pushes):
    socket = _socket(await _user("viewer", "view_operations"))
    await socket.connect()
    await socket.receive_json_from(timeout=5)

    later = await socket.receive_json_from(timeout=5)
    await socket.disconnect()

    # The clock in the level section moves; the switches stay as they were.
    assert "ops-maintenance" not in later["html"] and "ops-breakers" not in later["html"]


async def test_a_revoked_viewer_is_disconnected(fast_pushes, monkeypatch):
    monkeypatch.setattr(consumers, "RECHECK_SECONDS", 0.3)
    viewer = await _user("viewer", "view_operations")
    socket = _socket(viewer)
    await socket.connect()
    await socket.receive_json_from(timeout=5)

    await viewer.user_permissions.aclear()
    for _ in range(50):
        message = await socket.receive_output(timeout=5)
        if message["type"] == "websocket.close":
            break

    assert message == {"type": "websocket.close", "code": 4403}


async def test_a_viewer_no_longer_staff_is_disconnected(fast_pushes, monkeypatch):
    monkeypatch.setattr(consumers, "RECHECK_SECONDS", 0.3)
    viewer = await _user("viewer", "view_operations")
    socket = _socket(viewer)
    await socket.connect()
    await socket.receive_json_from(timeout=5)

    await User.objects.filter(pk=viewer.pk).aupdate(is_staff=False)
    for _ in range(50):
        message = await socket.receive_output(timeout=5)
        if message["type"] == "websocket.close":
            break

    assert message == {"type": "websocket.close", "code": 4403}


async def test_the_browser_route_uses_the_login_cookie_and_checks_the_origin():
    from voiceplatform.asgi import application

    client = Client()
    await sync_to_async(client.force_login)(await _user("viewer", "view_operations"))
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()

    signed_in = WebsocketCommunicator(
        application, "/ws/ops/", headers=[(b"origin", b"http://localhost"), (b"cookie", cookie)]
    )
    anonymous = WebsocketCommunicator(
        application, "/ws/ops/", headers=[(b"origin", b"http://localhost")]
    )
    foreign = WebsocketCommunicator(
        application, "/ws/ops/", headers=[(b"origin", b"https://evil.example"), (b"cookie", cookie)]
    )
    accepted, _ = await signed_in.connect()
    await signed_in.disconnect()

    assert accepted
    assert (await anonymous.connect())[0] is False
    assert (await foreign.connect())[0] is False
