"""Shared factories. Async tests get them through conftest.py's make_* fixtures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import factory
from asgiref.sync import sync_to_async
from django.utils import timezone

from sessions_app import tokens
from sessions_app.models import ApiKey, ConversationItem, VoiceSession
from tools_app.models import Task, ToolExecution


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


class ToolExecutionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ToolExecution

    session = factory.SubFactory(VoiceSessionFactory)
    call_id = factory.Sequence(lambda n: f"call_{n:04d}")
    tool = "bash"
    arguments = factory.LazyFunction(lambda: {"command": "sleep 20"})
    status = ToolExecution.Status.RUNNING


class TaskFactory(factory.django.DjangoModelFactory):
    """A task, as a call that went on in the background leaves it (running unless
    told), with its call: no worker runs it."""

    class Meta:
        model = Task

    execution = factory.SubFactory(ToolExecutionFactory)
    session = factory.SelfAttribute("execution.session")
    tool = factory.SelfAttribute("execution.tool")
    summary = factory.LazyAttribute(lambda task: f"{task.tool} — sleep 20")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        # created_at is auto_now_add: a given one is set after the insert.
        created_at = kwargs.pop("created_at", None)
        task = super()._create(model_class, *args, **kwargs)
        if created_at is not None:
            model_class.objects.filter(pk=task.pk).update(created_at=created_at)
            task.created_at = created_at
        return task


def bearer(session: VoiceSession | str) -> dict[str, str]:
    session_id = session if isinstance(session, str) else session.pk
    return {"Authorization": f"Bearer {tokens.issue(session_id)}"}


def async_create(factory_class: type[factory.Factory]) -> Callable[..., Awaitable]:
    """factory_class.create for async code: the ORM's sync work runs in Django's thread,
    as it must when called from the event loop."""
    return sync_to_async(factory_class.create)
