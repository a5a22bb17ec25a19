"""The checks behind the checklist items the app can verify itself.

Each check answers (passed, detail), never raises, and is bounded in time (run() gives
it TIMEOUT_SECONDS). Checks that look at the HTTP surface call our own ASGI app in this
process, as an anonymous browser on HTTPS would; blocking work runs off the event loop.
A check changes nothing a user could see: no session is recorded, no user's rate-limit
bucket counted, and the audit row it writes is rolled back.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import NamedTuple
from urllib.parse import urlsplit

import httpx
import structlog
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.checks import WARNING, run_checks
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.shortcuts import resolve_url
from django.urls import Resolver404, resolve, reverse
from prometheus_client.metrics import MetricWrapperBase

from ops_app import metrics, ratelimit
from ops_app.models import AuditEvent, ChecklistItem
from sessions_app import realtime
from tools_app import control
from voiceplatform import outage
from voiceplatform.errors import TooManyRequests

log = structlog.get_logger(__name__)

Verifier = ChecklistItem.Verifier

TIMEOUT_SECONDS = 5.0
DETAIL_MAX_CHARS = 2000
HEALTH_PATHS = ("/health/live", "/health", "/health/ready")
# The dashboard's page; checked once it is served.
OPS_PATH = "/ops/"
AUDIT_TRIGGER = "ops_audit_no_update_or_delete"
# Limits whose 0 would refuse every caller (ops_app.ratelimit counts past the limit).
RATE_LIMITS = (
    "SESSION_RATE_LIMIT_PER_IP",
    "SESSION_RATE_LIMIT_PER_USER",
    "SESSION_EVENTS_PER_MINUTE",
)
PROBE_LIMIT = 2
# Long enough that a probe never straddles two windows in practice.
PROBE_WINDOW_SECONDS = 3600
# Secrets shorter than this would match ordinary text by chance.
SECRET_MIN_CHARS = 8


class Verdict(NamedTuple):
    passed: bool
    detail: str


async def run(name: str) -> Verdict:
    """Runs the named check within TIMEOUT_SECONDS. A check that breaks or runs out of
    time fails with the reason; no secret appears in a detail."""
    check = VERIFIERS.get(name)
    if check is None:
        return Verdict(False, f"There is no automatic check named {name!r}.")
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            verdict = await check()
    except TimeoutError:
        verdict = Verdict(False, f"No answer within {TIMEOUT_SECONDS:g} s.")
    except Exception as exc:
        log.warning("verification_broke", check=name, error=type(exc).__name__)
        verdict = Verdict(False, f"The check could not finish: {type(exc).__name__}: {exc}")
    return Verdict(verdict.passed, _redact(verdict.detail)[:DETAIL_MAX_CHARS])


# --- the checks -----------------------------------------------------------------------


async def health() -> Verdict:
    """Every health endpoint we serve answers 200; /health/live must be among them."""
    served = [path for path in HEALTH_PATHS if _routed(path)]
    if "/health/live" not in served:
        return Verdict(False, "/health/live is not served.")
    async with _in_process() as client:
        answers = {path: (await client.get(path)).status_code for path in served}
    detail = ", ".join(f"{path} {status}" for path, status in answers.items())
    return Verdict(all(status == 200 for status in answers.values()), detail)


async def session_creation() -> Verdict:
    """The configured upstream mints a client secret for a minimal session config (no
    session is recorded; the secret expires unused)."""
    upstream = settings.OPENAI_BASE_URL
    try:
        secret = await realtime.create_client_secret(
            {"type": "realtime", "model": settings.OPENAI_MODEL}
        )
    except realtime.UpstreamError as exc:
        return Verdict(False, f"{upstream} failed: {exc.code} ({exc.status}): {exc.message}")
    if not secret.get("value"):
        return Verdict(False, f"{upstream} answered without a client secret.")
    return Verdict(True, f"{upstream} minted a client secret for {settings.OPENAI_MODEL}.")


async def metrics_exposed() -> Verdict:
    """Every metric of ops_app.metrics is registered and rendered at /metrics."""
    expected = _metric_names()
    token = settings.METRICS_BEARER_TOKEN
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    async with _in_process() as client:
        response = await client.get(reverse("metrics"), headers=auth)
    if response.status_code != 200:
        return Verdict(False, f"/metrics answered {response.status_code}.")
    missing = [name for name in expected if f"# TYPE {name} " not in response.text]
    if missing:
        return Verdict(False, f"/metrics lacks {', '.join(missing)}.")
    return Verdict(True, f"/metrics renders all {len(expected)} voice_* metrics.")


async def rate_limiting() -> Verdict:
    """The limits are set, and the shared counter refuses a probe bucket (one no caller
    uses) past its limit."""
    unset = [
        f"{name} is {getattr(settings, name)}"
        for name in RATE_LIMITS
        if getattr(settings, name) <= 0
    ]
    if unset:
        return Verdict(False, f"{'; '.join(unset)}: a limit must be above 0.")
    bucket = f"checklist-probe:{secrets.token_hex(8)}"
    for attempt in range(1, PROBE_LIMIT + 2):
        try:
            await ratelimit.hit(
                bucket, PROBE_LIMIT, window_seconds=PROBE_WINDOW_SECONDS, audited=False
            )
        except TooManyRequests:
            if attempt <= PROBE_LIMIT:
                return Verdict(False, f"The counter refused hit {attempt} of {PROBE_LIMIT}.")
        else:
            if attempt > PROBE_LIMIT:
                return Verdict(
                    False, f"The counter let hit {attempt} through (limit {PROBE_LIMIT})."
                )
    backend = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]
    shared = "" if settings.REDIS_URL else " (counted per process: REDIS_URL is not set)"
    if settings.REDIS_URL and outage.redis.down:
        shared = " (counted per process while Redis is unreachable)"
    limits = ", ".join(f"{name} {getattr(settings, name)}" for name in RATE_LIMITS)
    return Verdict(True, f"{limits}; the {backend} counter refused a probe past its limit{shared}.")


async def authentication() -> Verdict:
    """/admin and /ops pages send an anonymous caller to log in (or refuse them)."""
    login_paths = {reverse("admin:login"), urlsplit(resolve_url(settings.LOGIN_URL)).path}
    found, passed = [], True
    async with _in_process() as client:
        for path in (reverse("admin:index"), OPS_PATH, reverse("checklists:index")):
            if not _routed(path):
                found.append(f"{path} not served")
                continue
            response = await client.get(path)
            status = response.status_code
            if status in (301, 302, 303, 307) and _path_of(response) in login_paths:
                found.append(f"{path} → log in")
            elif status in (401, 403):
                found.append(f"{path} refused ({status})")
            else:
                passed = False
                found.append(f"{path} answered {status} to an anonymous caller")
    return Verdict(passed, "; ".join(found) + ".")


async def audit_logging() -> Verdict:
    """An audit event can be written and, on PostgreSQL, the trigger that refuses
    changing or deleting one is in place and refuses (the probe row is rolled back)."""
    return await sync_to_async(_probe_audit_log, thread_sensitive=True)()


async def no_secrets() -> Verdict:
    """None of our secrets appears in the headers or body of the pages anyone may ask
    for. /session gets a body it refuses, so no session is recorded for the probe."""
    known = _secrets()
    async with _in_process() as client:
        responses = [
            await client.get(reverse("client")),
            await client.post(reverse("session-create"), json={"checklist_probe": True}),
            await client.get(reverse("metrics")),
            await client.get("/health/live"),
            await client.get(reverse("admin:login")),
        ]
    leaks = []
    for response in responses:
        seen = "\n".join(f"{key}: {value}" for key, value in response.headers.items())
        seen += "\n" + response.text
        where = f"{response.request.method} {response.request.url.path}"
        leaks += [f"{name} in {where}" for name, value in known.items() if value in seen]
    if leaks:
        return Verdict(False, f"Exposed: {'; '.join(leaks)}.")
    asked = ", ".join(f"{r.request.method} {r.request.url.path}" for r in responses)
    return Verdict(True, f"None of {', '.join(known)} in {asked}.")


async def secure_settings() -> Verdict:
    """DEBUG off, the production settings on, secure cookies, and Django's deploy
    checks clean at WARNING and above (TLS itself ends at the ingress, out of sight)."""
    findings = await sync_to_async(_settings_findings, thread_sensitive=False)()
    if findings:
        return Verdict(False, "; ".join(findings) + ".")
    return Verdict(
        True,
        f"DEBUG off, PRODUCTION on, HSTS {settings.SECURE_HSTS_SECONDS} s, secure cookies, "
        "deploy checks clean.",
    )


async def tool_isolation() -> Verdict:
    """Every worker that answers runs bash isolated (bubblewrap, or rlimits when chosen);
    one reporting none fails, and so does no worker answering."""
    wait = min(settings.WORKER_PING_TIMEOUT_SECONDS, TIMEOUT_SECONDS - 1)
    found = await sync_to_async(control.worker_isolations, thread_sensitive=False)(wait)
    if not found:
        return Verdict(False, f"No Celery worker answered within {wait:g} s.")
    described = ", ".join(f"{host}: {level}" for host, level in sorted(found.items()))
    bare = sorted(host for host, level in found.items() if level not in ("bwrap", "rlimits"))
    if bare:
        return Verdict(False, f"No isolation reported by {', '.join(bare)}: {described}.")
    return Verdict(True, f"{described}.")


async def migrations() -> Verdict:
    """The database has every migration the code has."""
    pending = await sync_to_async(_unapplied_migrations, thread_sensitive=True)()
    if pending:
        return Verdict(False, f"Not applied: {', '.join(pending)}.")
    return Verdict(True, "Every migration is applied.")


VERIFIERS: dict[str, Callable[[], Awaitable[Verdict]]] = {
    Verifier.HEALTH: health,
    Verifier.SESSION_CREATION: session_creation,
    Verifier.METRICS: metrics_exposed,
    Verifier.RATE_LIMITING: rate_limiting,
    Verifier.AUTHENTICATION: authentication,
    Verifier.AUDIT_LOGGING: audit_logging,
    Verifier.NO_SECRETS: no_secrets,
    Verifier.SECURE_SETTINGS: secure_settings,
    Verifier.TOOL_ISOLATION: tool_isolation,
    Verifier.MIGRATIONS: migrations,
}


# --- what they need -------------------------------------------------------------------


@asynccontextmanager
async def _in_process() -> AsyncIterator[httpx.AsyncClient]:
    """A client of our own ASGI app in this process, anonymous, on HTTPS (so the SSL
    redirect of production does not answer in the page's place)."""
    # Imported here: importing it builds the whole application and logs the backends.
    from voiceplatform.asgi import application

    transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 0))
    async with httpx.AsyncClient(
        transport=transport,
        base_url=f"https://{_host()}",
        headers={"X-Forwarded-Proto": "https"},
        timeout=TIMEOUT_SECONDS,
    ) as client:
        yield client


def _host() -> str:
    """A host name ALLOWED_HOSTS accepts."""
    for host in settings.ALLOWED_HOSTS:
        name = host.lstrip(".")
        if name and "*" not in name:
            return name
    return "localhost"


def _routed(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


def _path_of(response: httpx.Response) -> str:
    return urlsplit(response.headers.get("location", "")).path


def _metric_names() -> list[str]:
    """The names /metrics shows for each metric of ops_app.metrics (counters with
    their _total)."""
    names = []
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names.append(family.name + ("_total" if family.type == "counter" else ""))
    return sorted(names)


def _secrets() -> dict[str, str]:
    """The secret values this deployment holds, by what they are."""
    found = {
        "SECRET_KEY": settings.SECRET_KEY,
        "OPENAI_API_KEY" if settings.OPENAI_API_KEY else "SIMULATOR_API_KEY": realtime.api_key(),
        "AWS_SECRET_ACCESS_KEY": settings.AWS_SECRET_ACCESS_KEY or "",
        "WEB_SEARCH_API_KEY": settings.WEB_SEARCH_API_KEY,
        "METRICS_BEARER_TOKEN": settings.METRICS_BEARER_TOKEN,
        "the database password": settings.DATABASES["default"].get("PASSWORD") or "",
    }
    for number, secret in enumerate(settings.OPENAI_WEBHOOK_SECRETS, start=1):
        found[f"OPENAI_WEBHOOK_SECRET {number}"] = secret.removeprefix("whsec_")
    return {name: value for name, value in found.items() if len(value) >= SECRET_MIN_CHARS}


def _redact(text: str) -> str:
    for value in _secrets().values():
        text = text.replace(value, "[secret]")
    return text


class _RollBack(Exception):
    pass


def _probe_audit_log() -> Verdict:
    verdict = Verdict(False, "The probe did not run.")
    try:
        with transaction.atomic():
            event = AuditEvent.objects.create(
                action=AuditEvent.Action.CHECKLIST_RECHECKED,
                actor_name="checklist probe",
                target="probe (rolled back)",
            )
            if connection.vendor != "postgresql":
                verdict = Verdict(
                    True,
                    f"An event was written; on {connection.vendor} nothing refuses changing "
                    "it (the append-only trigger is PostgreSQL's).",
                )
            else:
                verdict = _append_only(event)
            raise _RollBack
    except _RollBack:
        pass
    return verdict


def _append_only(event: AuditEvent) -> Verdict:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgenabled FROM pg_trigger WHERE tgname = %s AND tgrelid = %s::regclass",
            [AUDIT_TRIGGER, AuditEvent._meta.db_table],
        )
        row = cursor.fetchone()
    if row is None:
        return Verdict(False, f"An event was written, but the trigger {AUDIT_TRIGGER} is missing.")
    if row[0] == "D":
        return Verdict(False, f"An event was written, but the trigger {AUDIT_TRIGGER} is disabled.")
    try:
        with transaction.atomic():
            AuditEvent.objects.filter(pk=event.pk).update(target="changed")
    except DatabaseError:
        return Verdict(True, f"An event was written; {AUDIT_TRIGGER} refused changing it.")
    return Verdict(False, f"An event was written and then changed: {AUDIT_TRIGGER} let it.")


def _settings_findings() -> list[str]:
    findings = []
    if settings.DEBUG:
        findings.append("DEBUG is on")
    if not settings.PRODUCTION:
        findings.append("PRODUCTION is off (development defaults)")
    else:
        if not settings.SESSION_COOKIE_SECURE:
            findings.append("SESSION_COOKIE_SECURE is off")
        if not settings.CSRF_COOKIE_SECURE:
            findings.append("CSRF_COOKIE_SECURE is off")
    findings += [
        f"{message.id}: {str(message.msg).split('. ')[0].rstrip('.')}"
        for message in run_checks(include_deployment_checks=True)
        if message.level >= WARNING and not message.is_silenced()
    ]
    return findings


def _unapplied_migrations() -> list[str]:
    """Every migration the code has that the database has not recorded, in order; also
    one below a later migration that is applied (the executor's plan would skip it)."""
    loader = MigrationExecutor(connection).loader
    pending: dict[tuple[str, str], None] = {}
    for leaf in loader.graph.leaf_nodes():
        for node in loader.graph.forwards_plan(leaf):
            if node not in loader.applied_migrations:
                pending[node] = None
    return [f"{app}.{name}" for app, name in pending]
