"""Voice sessions, their transcript, the API keys that may create them, webhooks seen."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import connections, models
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone


def new_session_id() -> str:
    return "sess_" + secrets.token_urlsafe(16)


# What a session id can be (new_session_id's, and the ids older rows keep): anything
# else names no session, and is never sent to the database or the channel layer.
SESSION_ID = re.compile(r"[\w-]{1,40}", re.ASCII)


class ApiKeyQuerySet(models.QuerySet):
    def active(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    """A key an API client uses to create sessions. Only its SHA-256 is stored."""

    PREFIX = "vpk_"

    name = models.CharField(max_length=100)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    lookup = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.PREFIX}{self.lookup}…)"

    @staticmethod
    def hash(raw: str) -> str:
        # Keys are 256 random bits: a fast hash is enough, and lookups stay cheap.
        return hashlib.sha256(raw.encode()).hexdigest()

    def issue(self) -> str:
        """Sets a fresh key on this instance and returns it; it is shown once."""
        self.lookup = secrets.token_hex(8)
        raw = f"{self.PREFIX}{self.lookup}_{secrets.token_urlsafe(32)}"
        self.key_hash = self.hash(raw)
        return raw


class VoiceSessionQuerySet(models.QuerySet):
    def live(self) -> VoiceSessionQuerySet:
        """Sessions holding capacity: not ended, within their lifetime, and, while never
        connected, within the grace to connect (an abandoned offer frees its place)."""
        now = timezone.now()
        return self.filter(status__in=VoiceSession.LIVE_STATUSES, expires_at__gt=now).exclude(
            status=VoiceSession.Status.CREATED, created_at__lte=_connect_deadline(now)
        )

    def overdue(self) -> VoiceSessionQuerySet:
        """Sessions still marked live that no longer hold capacity: due to be ended."""
        now = timezone.now()
        return self.filter(status__in=VoiceSession.LIVE_STATUSES).filter(
            models.Q(expires_at__lte=now)
            | models.Q(status=VoiceSession.Status.CREATED, created_at__lte=_connect_deadline(now))
        )

    def owned_by(self, *, user_id: int | None, api_key_id: int | None) -> VoiceSessionQuerySet:
        """The sessions a caller started: an API key's own, or a signed-in user's in the
        browser (a key is its own caller, as for policy and limits); none for anonymous."""
        if api_key_id:
            return self.filter(api_key_id=api_key_id)
        if user_id:
            return self.filter(user_id=user_id, api_key__isnull=True)
        return self.none()

    def owning_file(self, name: str) -> VoiceSessionQuerySet:
        """The session whose transcript export or recording is stored under name."""
        return self.filter(
            models.Q(transcript_json=name)
            | models.Q(transcript_text=name)
            | models.Q(recording=name)
        )


def _connect_deadline(now):
    return now - timedelta(seconds=settings.SESSION_CONNECT_GRACE_SECONDS)


class VoiceSession(models.Model):
    class Status(models.TextChoices):
        CREATED = "created"
        CONNECTING = "connecting"
        ACTIVE = "active"
        ENDED = "ended"
        EXPIRED = "expired"
        FAILED = "failed"

    class Source(models.TextChoices):
        WEB = "web"  # a browser, anonymous or logged in
        API = "api"  # a client with an API key
        SIP = "sip"  # an incoming phone call

    class Voice(models.TextChoices):
        ALLOY = "alloy"
        ASH = "ash"
        BALLAD = "ballad"
        CEDAR = "cedar"
        CORAL = "coral"
        ECHO = "echo"
        MARIN = "marin"
        SAGE = "sage"
        SHIMMER = "shimmer"
        VERSE = "verse"

    class EndReason(models.TextChoices):
        CLIENT = "client"
        CALL_ENDED = "call_ended"  # the upstream closed the call
        MAX_DURATION = "max_duration"
        NEVER_CONNECTED = "never_connected"
        ACCEPT_REFUSED = "accept_refused"  # an incoming call could not be accepted
        MAINTENANCE = "maintenance"  # an operator ended live sessions for maintenance
        STAFF = "staff"  # a member of staff ended this one call (ops_app.actions.end_call)

    class Outcome(models.TextChoices):
        RESOLVED = "resolved", "Resolved"
        NOT_RESOLVED = "not_resolved", "Not resolved"
        FOLLOW_UP = "follow_up", "Follow-up needed"

    class SummaryState(models.TextChoices):
        """Where the post-call summary stands; blank: never asked for (a live session,
        summaries off, or ended before they existed)."""

        PENDING = "pending"  # queued, or waiting to be tried again
        DONE = "done"
        SKIPPED = "skipped"  # too little was said
        FAILED = "failed"  # the model could not be used, retries spent

    LIVE_STATUSES = (Status.CREATED, Status.CONNECTING, Status.ACTIVE)

    id = models.CharField(primary_key=True, max_length=40, default=new_session_id, editable=False)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.CREATED)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.WEB)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    connected_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    duration_seconds = models.FloatField(null=True, blank=True)
    end_reason = models.CharField(max_length=40, choices=EndReason.choices, blank=True)

    model = models.CharField(max_length=64)
    voice = models.CharField(max_length=32, choices=Voice.choices)
    instructions = models.TextField(blank=True)
    tools = models.JSONField(default=list, blank=True)
    call_id = models.CharField(max_length=80, null=True, blank=True, unique=True)
    upstream_session_id = models.CharField(max_length=80, blank=True)
    pod = models.CharField(max_length=120, blank=True)
    # True while this server holds the call's sideband (it then executes tool calls).
    sideband_connected = models.BooleanField(default=False)
    # When the server first held it: from then on, usage is what the server measured.
    sideband_seen_at = models.DateTimeField(null=True, blank=True)
    degradation_level = models.PositiveSmallIntegerField(default=1)
    # The directory under TOOL_WORKSPACE_ROOT its tool calls use: its own id, or the
    # workspace of the session it resumed while that one was still kept.
    workspace = models.CharField(max_length=40, db_index=True, editable=False)
    resumed_from = models.ForeignKey(
        "self", null=True, blank=True, related_name="resumed_by", on_delete=models.SET_NULL
    )

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    # What per-address limits count: the address, or its /64 for IPv6 (one subscriber).
    client_network = models.CharField(max_length=64, blank=True, db_index=True)
    user_agent = models.CharField(max_length=300, blank=True)

    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    # The parts the upstream's usage reports, priced differently (sessions_app.costs).
    # Cached input tokens are counted in their own fields, not in input_*_tokens.
    input_text_tokens = models.PositiveBigIntegerField(default=0)
    input_audio_tokens = models.PositiveBigIntegerField(default=0)
    cached_text_tokens = models.PositiveBigIntegerField(default=0)
    cached_audio_tokens = models.PositiveBigIntegerField(default=0)
    output_text_tokens = models.PositiveBigIntegerField(default=0)
    output_audio_tokens = models.PositiveBigIntegerField(default=0)
    # An estimate from the price table in force when each response was counted.
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=0)

    # WebRTC quality reported by the client every few seconds: running aggregate.
    audio_stats = models.JSONField(default=dict, blank=True)
    recording = models.FileField(upload_to="recordings/", blank=True)

    transcript_json = models.FileField(upload_to="transcripts/", blank=True)
    transcript_text = models.FileField(upload_to="transcripts/", blank=True)

    # What the call came to, written after it ended (tools_app.agents.summaries),
    # redacted as the transcript is; summary and topics go with the transcript.
    summary = models.TextField(blank=True)
    outcome = models.CharField(max_length=12, choices=Outcome.choices, blank=True)
    topics = models.JSONField(default=list, blank=True)
    summarized_at = models.DateTimeField(null=True, blank=True)
    summary_state = models.CharField(max_length=8, choices=SummaryState.choices, blank=True)
    summary_note = models.CharField(max_length=200, blank=True)  # why skipped or failed
    # Every summary request's own usage (retries and redos included); also counted in
    # the session's tokens and cost above, as what the conversation cost.
    summary_input_tokens = models.PositiveBigIntegerField(default=0)
    summary_output_tokens = models.PositiveBigIntegerField(default=0)
    summary_cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)

    objects = VoiceSessionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "expires_at"]),
            # When a session was over, as retention measures it (sessions_app.retention).
            models.Index(Coalesce("ended_at", "created_at"), name="session_over_at"),
        ]

    def __str__(self) -> str:
        return self.id

    def save(self, *args, **kwargs) -> None:
        if not self.workspace:
            self.workspace = self.pk
        super().save(*args, **kwargs)

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE_STATUSES

    @property
    def end_due(self) -> tuple[Status, EndReason] | None:
        """(status, reason) this live session should end with now, or None."""
        if not self.is_live:
            return None
        now = timezone.now()
        if self.expires_at <= now:
            return self.Status.EXPIRED, self.EndReason.MAX_DURATION
        if self.status == self.Status.CREATED and self.created_at <= _connect_deadline(now):
            return self.Status.EXPIRED, self.EndReason.NEVER_CONNECTED
        return None

    def urls(self) -> dict[str, str]:
        """Where a client takes this session next."""
        return {
            "sdp": reverse("sdp"),
            "tools": reverse("tools"),
            "events": reverse("session-events", args=[self.pk]),
            "end": reverse("session-end", args=[self.pk]),
            "recording": reverse("session-recording", args=[self.pk]),
            "ws": f"/ws/sessions/{self.pk}/",
        }

    def as_started(self, *, token: str, client_secret: dict) -> dict:
        """The /session answer."""
        return {
            "session_id": self.pk,
            "session_token": token,
            "client_secret": {
                "value": client_secret["value"],
                "expires_at": client_secret["expires_at"],
            },
            "model": self.model,
            "voice": self.voice,
            "expires_at": self.expires_at.isoformat(),
            "tools": [tool["name"] for tool in self.tools],
            "degradation_level": self.degradation_level,
            "urls": self.urls(),
        }

    def as_ended(self) -> dict:
        """The /session/<id>/end answer."""
        return {
            "session_id": self.pk,
            "status": self.status,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "duration_seconds": self.duration_seconds,
            "end_reason": self.end_reason,
        }

    def as_listed(self, preview: str) -> dict:
        """One row of GET /sessions; preview: its first user turn, shortened."""
        return {
            "session_id": self.pk,
            "status": self.status,
            "started_at": self.created_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "duration_seconds": self.duration_seconds,
            "title": preview,
            "resumable": not self.is_live or self.end_due is not None,
            "resumed_from": self.resumed_from_id,
        }

    @property
    def attribution(self) -> str:
        if self.user_id:
            return f"user:{self.user_id}"
        if self.api_key_id:
            return f"api_key:{self.api_key_id}"
        return "anonymous"


class ConversationItem(models.Model):
    """One transcript entry, keyed by the upstream item id; ordered by first sight."""

    class Kind(models.TextChoices):
        MESSAGE = "message"
        FUNCTION_CALL = "function_call"
        FUNCTION_CALL_OUTPUT = "function_call_output"

    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"
        SYSTEM = "system"
        TOOL = "tool"

    class Status(models.TextChoices):
        IN_PROGRESS = "in_progress"
        COMPLETED = "completed"
        FAILED = "failed"

    class Source(models.TextChoices):
        SIDEBAND = "sideband"  # seen by the server on the call itself
        CLIENT = "client"  # relayed by the browser

    session = models.ForeignKey(VoiceSession, related_name="items", on_delete=models.CASCADE)
    item_id = models.CharField(max_length=80)
    kind = models.CharField(max_length=24, choices=Kind.choices, default=Kind.MESSAGE)
    role = models.CharField(max_length=12, choices=Role.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.IN_PROGRESS)
    text = models.TextField(blank=True)
    name = models.CharField(max_length=80, blank=True)
    call_id = models.CharField(max_length=80, blank=True)
    arguments = models.TextField(blank=True)
    source = models.CharField(max_length=12, choices=Source.choices, default=Source.SIDEBAND)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["session", "item_id"], name="unique_item_per_session")
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:60]}"


class WebhookEventQuerySet(models.QuerySet):
    def insert_new(self, events: list[WebhookEvent]) -> dict[str, int]:
        """Inserts, in one statement, each event whose webhook_key no row holds yet (nor
        an earlier event of the list); returns the ids of those it inserted, by key. A
        key already taken is left as it is: nothing stored is overwritten. The database
        decides, so deliveries racing in other processes are told apart as well.

        bulk_create(ignore_conflicts=True) cannot say which rows it inserted: this is
        its INSERT with the RETURNING that can (PostgreSQL, and SQLite since 3.35)."""
        if not events:
            return {}
        model, connection = self.model, connections[self.db]
        fields = [f for f in model._meta.concrete_fields if not f.primary_key]
        quote = connection.ops.quote_name
        params = []
        for event in events:
            params.extend(f.get_db_prep_save(f.pre_save(event, True), connection) for f in fields)
        row = "(" + ", ".join(["%s"] * len(fields)) + ")"
        # Only the model's own names are written into it; every value is a parameter.
        sql = (
            f"INSERT INTO {quote(model._meta.db_table)}"  # noqa: S608
            f" ({', '.join(quote(f.column) for f in fields)})"
            f" VALUES {', '.join([row] * len(events))}"
            f" ON CONFLICT ({quote('webhook_key')}) DO NOTHING"
            f" RETURNING {quote(model._meta.pk.column)}, {quote('webhook_key')}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return {key: pk for pk, key in cursor.fetchall()}


class WebhookEvent(models.Model):
    """Every accepted webhook delivery, once: the webhook-id is the idempotency key."""

    webhook_id = models.TextField()
    # The idempotency key: a hash of the whole webhook-id, however long it is.
    webhook_key = models.CharField(max_length=64, unique=True)
    event_type = models.CharField(max_length=80)
    payload = models.JSONField()
    outcome = models.CharField(max_length=200, blank=True)
    session = models.ForeignKey(VoiceSession, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = WebhookEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.event_type} {self.webhook_id[:80]}"

    @staticmethod
    def key_of(webhook_id: str) -> str:
        return hashlib.sha256(webhook_id.encode("utf-8", "surrogatepass")).hexdigest()
