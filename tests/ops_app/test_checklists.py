"""Deployment checklists: the seed's four as data, runs that operators tick and
annotate (each tick one audit event), and the items the app checks itself, each of
which fails when what it checks is broken."""

from __future__ import annotations

import os
import signal
import tempfile
import types
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.http import HttpResponse
from django.test import AsyncClient
from django.urls import path
from prometheus_client import REGISTRY

from ops_app import checklists, metrics, verifications
from ops_app.models import (
    AuditEvent,
    ChecklistEntry,
    ChecklistItem,
    ChecklistRun,
    ChecklistTemplate,
)
from sessions_app.models import VoiceSession
from tests import support
from tests.support import free_port, wait_for_worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _checklists(db):
    # Data from a migration: other transactional tests empty the tables.
    support.load_checklists()


SEED_GROUPS = {
    "pre-deployment": [
        ("Infrastructure", 5),
        ("Kubernetes", 5),
        ("Secrets Management", 4),
        ("Observability", 6),
    ],
    "deployment": [
        ("Container Images", 3),
        ("Kubernetes Resources", 8),
        ("Database", 4),
        ("Redis", 3),
    ],
    "post-deployment-verification": [
        ("Functional Tests", 6),
        ("Performance Tests", 4),
        ("Security Tests", 5),
        ("Monitoring Verification", 5),
    ],
    "go-live": [("Final Checks", 5), ("Staged Rollout", 6), ("Documentation", 4)],
}
CHECKED_BY_THE_APP = {
    "Health endpoints responding": "health",
    "Session creation works": "session_creation",
    "Tool execution works": "tool_isolation",
    "TLS configured correctly": "secure_settings",
    "No exposed secrets": "no_secrets",
    "Rate limiting working": "rate_limiting",
    "Authentication enforced": "authentication",
    "Audit logging active": "audit_logging",
    "Metrics being collected": "metrics",
    "Schema migrations applied": "migrations",
}


def _user(name: str, *codenames: str) -> User:
    # Staff, as everyone who signs in through the admin is.
    user = User.objects.create_user(name, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="ops_app", codename__in=codenames)
    )
    return user


@pytest.fixture
async def operator() -> User:
    return await sync_to_async(_user)("olivia", "view_operations", "operate")


@pytest.fixture
async def viewer() -> User:
    return await sync_to_async(_user)("victor", "view_operations")


@pytest.fixture
async def operator_client(operator) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(operator)
    return client


@pytest.fixture
async def post_deployment() -> ChecklistTemplate:
    return await ChecklistTemplate.objects.aget(slug="post-deployment-verification")


@pytest.fixture
async def go_live() -> ChecklistTemplate:
    return await ChecklistTemplate.objects.aget(slug="go-live")


async def _entry(run: ChecklistRun, text: str) -> ChecklistEntry:
    return await ChecklistEntry.objects.select_related("item", "done_by").aget(
        run=run, item__text=text
    )


def _urlconf(*patterns) -> types.ModuleType:
    """The project's routes with some put in front of them."""
    from voiceplatform import urls as project

    module = types.ModuleType("checklist_test_urls")
    module.urlpatterns = [*patterns, *project.urlpatterns]
    return module


# --- the checklists as data -----------------------------------------------------------


async def test_the_migration_loaded_the_four_seed_checklists_item_for_item():
    templates = [t async for t in ChecklistTemplate.objects.all()]
    found = {}
    for template in templates:
        groups: list[list] = []
        async for item in ChecklistItem.objects.filter(template=template):
            if not groups or groups[-1][0] != item.group:
                groups.append([item.group, 0])
            groups[-1][1] += 1
        found[template.slug] = [tuple(group) for group in groups]
    verifiers = {
        item.text: item.verifier async for item in ChecklistItem.objects.exclude(verifier="")
    }

    assert [(t.section, t.title) for t in templates] == [
        ("10.1", "Pre-Deployment"),
        ("10.2", "Deployment"),
        ("10.3", "Post-Deployment Verification"),
        ("10.4", "Go-Live Checklist"),
    ]
    assert found == SEED_GROUPS
    assert await ChecklistItem.objects.acount() == 73
    assert verifiers == CHECKED_BY_THE_APP
    assert set(verifiers.values()) == set(ChecklistItem.Verifier.values)
    assert set(verifications.VERIFIERS) == set(ChecklistItem.Verifier.values)


# --- runs -----------------------------------------------------------------------------


async def test_starting_a_run_verifies_the_items_the_app_can_check(
    simulator, operator, post_deployment
):
    run = await checklists.start_run(post_deployment, actor=operator)

    entries = [e async for e in ChecklistEntry.objects.filter(run=run).select_related("item")]
    checked = {e.item.verifier: e for e in entries if e.item.verifier}
    by_hand = [e for e in entries if not e.item.verifier]
    assert len(entries) == 20 and len(checked) == 9
    assert all(e.verified_at is not None and e.verified_detail for e in checked.values())
    assert {name for name, e in checked.items() if e.verified_status == "passed"} == {
        "health",
        "session_creation",
        "tool_isolation",
        "no_secrets",
        "rate_limiting",
        "authentication",
        "audit_logging",
        "metrics",
    }
    # The test settings are development settings: not production-ready.
    assert checked["secure_settings"].verified_status == "failed"
    assert all(e.verified_status == "not_run" and e.verified_at is None for e in by_hand)
    started = await AuditEvent.objects.aget(action=AuditEvent.Action.CHECKLIST_STARTED)
    assert started.actor_name == "olivia" and started.details["run"] == run.pk
    assert await VoiceSession.objects.acount() == 0


async def test_each_tick_leaves_one_audit_event_with_who_when_and_note(
    operator, operator_client, go_live
):
    run = await checklists.start_run(go_live, actor=operator)
    entry = await _entry(run, "Rollback procedure verified")
    url = f"/ops/checklists/runs/{run.pk}/entries/{entry.pk}"

    ticked = await operator_client.post(url, {"done": "on", "note": "rolled back staging twice"})
    after_tick = await _entry(run, "Rollback procedure verified")
    unticked = await operator_client.post(url, {"note": "the second rollback lost a pod"})
    after_untick = await _entry(run, "Rollback procedure verified")

    assert ticked.status_code == 302 and unticked.status_code == 302
    assert after_tick.done and after_tick.done_by.username == "olivia"
    assert after_tick.done_at is not None and after_tick.note == "rolled back staging twice"
    assert not after_untick.done and after_untick.done_by is None
    events = [
        e
        async for e in AuditEvent.objects.filter(action=AuditEvent.Action.CHECKLIST_TICKED)
        .select_related("actor")
        .order_by("id")
    ]
    assert [(e.actor.username, e.details["done"], e.details["note"]) for e in events] == [
        ("olivia", True, "rolled back staging twice"),
        ("olivia", False, "the second rollback lost a pod"),
    ]
    assert timedelta(0) <= events[0].created_at - after_tick.done_at < timedelta(seconds=1)
    assert events[0].details["item"] == "Rollback procedure verified"
    assert events[0].ip == "127.0.0.1"


async def test_a_viewer_sees_a_run_but_cannot_tick_it_and_nothing_changes(
    operator, viewer, go_live
):
    run = await checklists.start_run(go_live, actor=operator)
    entry = await _entry(run, "Full rollout")
    client = AsyncClient()
    await client.aforce_login(viewer)
    events_before = await AuditEvent.objects.acount()

    page = await client.get(f"/ops/checklists/runs/{run.pk}/")
    tick = await client.post(f"/ops/checklists/runs/{run.pk}/entries/{entry.pk}", {"done": "on"})
    complete = await client.post(f"/ops/checklists/runs/{run.pk}/complete")
    start = await client.post("/ops/checklists/go-live/start")

    assert page.status_code == 200 and b"Full rollout" in page.content
    assert b"<form" not in page.content  # nothing to press
    assert tick.status_code == complete.status_code == start.status_code == 403
    unchanged = await _entry(run, "Full rollout")
    assert not unchanged.done and unchanged.done_by is None
    assert not (await ChecklistRun.objects.aget(pk=run.pk)).is_completed
    assert await ChecklistRun.objects.acount() == 1
    assert await AuditEvent.objects.acount() == events_before


async def test_an_operator_no_longer_staff_is_refused_on_the_session_already_open(
    operator, operator_client, go_live
):
    run = await checklists.start_run(go_live, actor=operator)
    entry = await _entry(run, "Full rollout")
    await User.objects.filter(pk=operator.pk).aupdate(is_staff=False)
    events_before = await AuditEvent.objects.acount()

    page = await operator_client.get(f"/ops/checklists/runs/{run.pk}/")
    tick = await operator_client.post(
        f"/ops/checklists/runs/{run.pk}/entries/{entry.pk}", {"done": "on"}
    )

    assert page.status_code == tick.status_code == 403
    assert not (await _entry(run, "Full rollout")).done
    assert await AuditEvent.objects.acount() == events_before


async def test_anyone_not_logged_in_is_sent_to_log_in(api, operator, go_live):
    run = await checklists.start_run(go_live, actor=operator)

    index = await api.get("/ops/checklists/")
    tick = await api.post(f"/ops/checklists/runs/{run.pk}/complete")

    assert index.status_code == 302
    assert index["Location"] == "/admin/login/?next=/ops/checklists/"
    assert tick.status_code == 302 and tick["Location"].startswith("/admin/login/")
    assert not (await ChecklistRun.objects.aget(pk=run.pk)).is_completed


async def test_a_tick_without_the_csrf_token_is_refused(operator, go_live):
    run = await checklists.start_run(go_live, actor=operator)
    entry = await _entry(run, "Full rollout")
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(operator)

    refused = await client.post(f"/ops/checklists/runs/{run.pk}/entries/{entry.pk}", {"done": "on"})

    assert refused.status_code == 403
    assert not (await _entry(run, "Full rollout")).done


async def test_an_operator_starts_a_run_from_the_list_and_sees_it_grouped(
    operator_client, simulator
):
    listing = await operator_client.get("/ops/checklists/")
    started = await operator_client.post("/ops/checklists/post-deployment-verification/start")
    page = await operator_client.get(started["Location"])

    assert listing.status_code == 200
    assert b"Post-Deployment Verification" in listing.content
    assert b'action="/ops/checklists/post-deployment-verification/start"' in listing.content
    assert started.status_code == 302
    html = page.content.decode()
    assert page.status_code == 200
    assert html.index("Functional Tests") < html.index("Security Tests")
    assert "Re-check" in html and "Complete" in html
    assert "<script" not in html and "style=" not in html  # the strict CSP holds
    run = await ChecklistRun.objects.aget()
    assert run.started_by_id is not None and run.verified_at is not None


async def test_a_recheck_updates_the_results_and_is_audited(
    settings, simulator, operator, operator_client, post_deployment
):
    settings.SESSION_RATE_LIMIT_PER_IP = 0
    run = await checklists.start_run(post_deployment, actor=operator)
    first = await _entry(run, "Rate limiting working")
    settings.SESSION_RATE_LIMIT_PER_IP = 20

    response = await operator_client.post(f"/ops/checklists/runs/{run.pk}/recheck")

    second = await _entry(run, "Rate limiting working")
    assert response.status_code == 302
    assert first.verified_status == "failed" and second.verified_status == "passed"
    assert second.verified_at > first.verified_at
    event = await AuditEvent.objects.aget(action=AuditEvent.Action.CHECKLIST_RECHECKED)
    assert event.actor_name == "olivia" and event.details["verified"]["rate_limiting"] is True


async def test_a_completed_run_is_listed_kept_and_cannot_be_changed(
    operator, operator_client, go_live
):
    run = await checklists.start_run(go_live, actor=operator)
    entry = await _entry(run, "Full rollout")
    await checklists.tick(entry, actor=operator, done=True, note="100% at 14:00")

    completed = await operator_client.post(
        f"/ops/checklists/runs/{run.pk}/complete", {"note": "live"}
    )
    tick_after = await operator_client.post(
        f"/ops/checklists/runs/{run.pk}/entries/{entry.pk}", {"note": "rewritten"}
    )
    listing = await operator_client.get("/ops/checklists/")

    assert completed.status_code == 302 and tick_after.status_code == 302
    run = await ChecklistRun.objects.select_related("completed_by").aget(pk=run.pk)
    assert run.completed_by.username == "olivia" and run.note == "live"
    assert (await _entry(run, "Full rollout")).note == "100% at 14:00"
    html = listing.content.decode()
    completed_section = html[html.index("Completed runs") :]
    assert f"/ops/checklists/runs/{run.pk}/" in completed_section
    assert "1 / 15" in completed_section
    event = await AuditEvent.objects.aget(action=AuditEvent.Action.CHECKLIST_COMPLETED)
    assert event.details["done"] == 1 and event.details["items"] == 15
    assert await AuditEvent.objects.filter(action="checklist_ticked").acount() == 1


async def test_completed_runs_are_shown_read_only_in_the_admin(operator, go_live):
    run = await checklists.start_run(go_live, actor=operator)
    await checklists.complete(run, actor=operator, note="went live")
    admin = await User.objects.acreate_superuser("root", "root@example.org", "pw")
    client = AsyncClient()
    await client.aforce_login(admin)

    listing = await client.get("/admin/ops_app/checklistrun/")
    page = await client.get(f"/admin/ops_app/checklistrun/{run.pk}/change/")
    delete = await client.post(f"/admin/ops_app/checklistrun/{run.pk}/delete/", {"post": "yes"})

    assert listing.status_code == 200 and f"run {run.pk}" in listing.content.decode()
    assert page.status_code == 200
    assert b"went live" in page.content and b"Monitor for 24 hours" in page.content
    assert b'name="_save"' not in page.content
    assert delete.status_code == 403
    assert await ChecklistRun.objects.filter(pk=run.pk).aexists()


# --- each automatic check passes when its condition holds, fails when broken ---------


async def test_health_passes_while_the_health_endpoints_answer():
    verdict = await verifications.run("health")

    assert verdict.passed, verdict.detail
    assert "/health/live 200" in verdict.detail


async def test_health_fails_when_a_health_endpoint_does_not_answer_200(settings):
    settings.ROOT_URLCONF = _urlconf(path("health/live", lambda r: HttpResponse(status=503)))

    verdict = await verifications.run("health")

    assert not verdict.passed and "/health/live 503" in verdict.detail


async def test_session_creation_passes_against_the_upstream_without_recording_a_session(
    simulator,
):
    verdict = await verifications.run("session_creation")

    assert verdict.passed, verdict.detail
    assert await VoiceSession.objects.acount() == 0


async def test_session_creation_fails_with_the_upstream_error_code(simulator):
    simulator.fault("error", status=500)

    verdict = await verifications.run("session_creation")

    assert not verdict.passed and "upstream_error" in verdict.detail
    assert simulator.key not in verdict.detail
    assert await VoiceSession.objects.acount() == 0


async def test_session_creation_fails_when_the_upstream_cannot_be_reached(settings):
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{free_port()}/simulator"
    settings.OPENAI_MAX_RETRIES = 0

    verdict = await verifications.run("session_creation")

    assert not verdict.passed and "upstream_unavailable" in verdict.detail


async def test_metrics_pass_while_every_voice_metric_is_exposed():
    verdict = await verifications.run("metrics")

    assert verdict.passed, verdict.detail


async def test_metrics_fail_when_a_metric_is_not_registered():
    REGISTRY.unregister(metrics.voice_errors_total)
    try:
        verdict = await verifications.run("metrics")
    finally:
        REGISTRY.register(metrics.voice_errors_total)

    assert not verdict.passed and "voice_errors_total" in verdict.detail


async def test_rate_limiting_passes_while_limits_are_set_and_counted():
    verdict = await verifications.run("rate_limiting")

    assert verdict.passed, verdict.detail


async def test_rate_limiting_fails_when_a_limit_is_zero(settings):
    settings.SESSION_RATE_LIMIT_PER_USER = 0

    verdict = await verifications.run("rate_limiting")

    assert not verdict.passed and "SESSION_RATE_LIMIT_PER_USER is 0" in verdict.detail


async def test_rate_limiting_fails_when_the_cache_is_unreachable(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }

    verdict = await verifications.run("rate_limiting")

    assert not verdict.passed and "could not finish" in verdict.detail


async def test_authentication_passes_while_ops_and_admin_send_strangers_to_log_in():
    verdict = await verifications.run("authentication")

    assert verdict.passed, verdict.detail
    assert "/admin/ → log in" in verdict.detail
    assert "/ops/checklists/ → log in" in verdict.detail


async def test_authentication_fails_when_an_operator_page_is_public(settings):
    settings.ROOT_URLCONF = _urlconf(path("admin/", lambda r: HttpResponse("welcome")))

    verdict = await verifications.run("authentication")

    assert not verdict.passed
    assert "/admin/ answered 200 to an anonymous caller" in verdict.detail


async def test_audit_logging_passes_while_events_are_written_and_append_only():
    before = await AuditEvent.objects.acount()

    verdict = await verifications.run("audit_logging")

    assert verdict.passed, verdict.detail
    assert await AuditEvent.objects.acount() == before  # the probe was rolled back


@pytest.mark.django_db
def test_audit_logging_fails_when_the_append_only_trigger_is_dropped():
    # Dropped inside the test's transaction, which is rolled back at its end.
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER {verifications.AUDIT_TRIGGER} ON {AuditEvent._meta.db_table}")

    verdict = async_to_sync(verifications.run)("audit_logging")

    assert not verdict.passed and "missing" in verdict.detail


async def test_no_secrets_passes_while_no_response_shows_one(simulator):
    verdict = await verifications.run("no_secrets")

    assert verdict.passed, verdict.detail
    assert "SECRET_KEY" in verdict.detail and "POST /session" in verdict.detail


async def test_no_secrets_fails_when_a_page_shows_the_secret_key(settings):
    settings.ROOT_URLCONF = _urlconf(path("", lambda r: HttpResponse(f"key={settings.SECRET_KEY}")))

    verdict = await verifications.run("no_secrets")

    assert not verdict.passed and "SECRET_KEY in GET /" in verdict.detail
    assert settings.SECRET_KEY not in verdict.detail


async def test_secure_settings_fail_with_debug_on(settings):
    settings.DEBUG = True

    verdict = await verifications.run("secure_settings")

    assert not verdict.passed and "DEBUG is on" in verdict.detail


async def test_secure_settings_pass_with_production_settings(settings):
    settings.DEBUG = False
    settings.PRODUCTION = True
    settings.SECRET_KEY = "k9" * 20 + "production-only-Q7xZ"
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    settings.OPENAI_API_KEY = "sk-test-production-key-0123456789"
    settings.USE_X_FORWARDED_FOR = True
    settings.METRICS_BEARER_TOKEN = "a-scrape-token-for-prometheus"

    verdict = await verifications.run("secure_settings")

    assert verdict.passed, verdict.detail


async def test_secure_settings_fail_when_production_cookies_are_not_secure(settings):
    settings.PRODUCTION = True
    settings.SESSION_COOKIE_SECURE = False

    verdict = await verifications.run("secure_settings")

    assert not verdict.passed and "SESSION_COOKIE_SECURE is off" in verdict.detail


async def test_migrations_pass_while_every_migration_is_applied():
    verdict = await verifications.run("migrations")

    assert verdict.passed, verdict.detail


@pytest.mark.django_db
def test_migrations_fail_when_one_is_not_applied():
    MigrationRecorder(connection).record_unapplied("ops_app", "0004_seed_deployment_checklists")

    verdict = async_to_sync(verifications.run)("migrations")

    assert not verdict.passed
    assert "ops_app.0004_seed_deployment_checklists" in verdict.detail


async def test_tool_isolation_passes_with_tasks_in_process():
    verdict = await verifications.run("tool_isolation")

    assert verdict.passed, verdict.detail
    assert "this process" in verdict.detail


@pytest.fixture
def start_worker(real_celery, tmp_path):
    started = []

    def start(name: str, **env: str):
        process = support.start_worker(name, tmp_path / f"{name}.log", env=env)
        started.append(process)
        wait_for_worker(name)
        return process

    yield start
    for process in started:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def test_tool_isolation_passes_when_every_worker_runs_bash_isolated(start_worker):
    await sync_to_async(start_worker)("isolated")

    verdict = await verifications.run("tool_isolation")

    assert verdict.passed, verdict.detail
    assert "isolated@" in verdict.detail and "bwrap" in verdict.detail


async def test_tool_isolation_fails_when_a_worker_reports_none(start_worker):
    # On this worker bubblewrap is there but does not work, as in a container that may
    # not create namespaces. (Its directory must be open to the sandbox uid that runs the
    # probe, or the search for bwrap would go on to the working one.)
    with tempfile.TemporaryDirectory() as broken:
        os.chmod(broken, 0o755)
        fake = Path(broken) / "bwrap"
        fake.write_text("#!/bin/sh\nexit 1\n")
        fake.chmod(0o755)
        await sync_to_async(start_worker)("bare", PATH=f"{broken}:{os.environ['PATH']}")

        verdict = await verifications.run("tool_isolation")

    assert not verdict.passed
    assert "No isolation reported by bare@" in verdict.detail and "none" in verdict.detail


async def test_tool_isolation_fails_when_no_worker_answers(real_celery):
    verdict = await verifications.run("tool_isolation")

    assert not verdict.passed and "No Celery worker answered" in verdict.detail
