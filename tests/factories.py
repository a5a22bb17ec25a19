"""Shared factories. Async tests get them through conftest.py's make_* fixtures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import factory
from asgiref.sync import sync_to_async
from django.utils import timezone

from sessions_app import tokens
from sessions_app.models import ApiKey, ConversationItem, VoiceSession


class VoiceSessionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = VoiceSession

    model = "gpt-realtime"
    voice = "marin"
    instructions = "Be brief."
    pod = "local"
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(minutes=15))


class ConversationItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConversationItem

    session = factory.SubFactory(VoiceSessionFactory)
    item_id = factory.Sequence(lambda n: f"item_{n:04d}")
    role = ConversationItem.Role.USER
    status = ConversationItem.Status.COMPLETED
    text = factory.Sequence(lambda n: f"utterance {n}")


class ApiKeyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ApiKey

    name = factory.Sequence(lambda n: f"client {n}")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        key = model_class(*args, **kwargs)
        key.raw = key.issue()
        key.save()
        return key


def bearer(session: VoiceSession | str) -> dict[str, str]:
    session_id = session if isinstance(session, str) else session.pk
    return {"Authorization": f"Bearer {tokens.issue(session_id)}"}


def async_create(factory_class: type[factory.Factory]) -> Callable[..., Awaitable]:
    """factory_class.create for async code: the ORM's sync work runs in Django's thread,
    as it must when called from the event loop."""
    return sync_to_async(factory_class.create)
