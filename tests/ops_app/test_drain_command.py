"""`manage.py drain`: the pod stops taking sessions; starting and cancelling a drain
each leave an audit event, as the other operator switches do."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from ops_app import drain
from ops_app.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.POD_NAME = "pod-t"
    yield tmp_path
    drain.stop()


def test_draining_and_cancelling_leave_an_audit_event_each(var_dir, capsys):
    call_command("drain", "--timeout", "0")
    drained = capsys.readouterr().out
    call_command("drain", "--cancel")

    assert "pod-t: draining" in drained and "this pod holds no call" in drained
    events = list(AuditEvent.objects.order_by("id"))
    assert [e.action for e in events] == ["drain_started", "drain_cancelled"]
    assert all(e.actor_name.startswith("cli:") for e in events)
    assert all(e.target == "pod pod-t" for e in events)
    assert events[0].details == {"timeout_seconds": 0.0}
