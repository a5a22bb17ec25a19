"""Settings, filled from the environment; every value has an embedded default.

With nothing set, the server runs on one machine: SQLite under var/, local-memory
cache, in-memory channel layer, Celery tasks in-process, files under var/, and the
built-in realtime simulator as the upstream. DATABASE_URL, REDIS_URL, OPENAI_API_KEY
and the storage settings switch each part to the real thing.

Parsing is strict: a value that cannot be read (a misspelt boolean, a number that is
not one, an unreadable secret file) stops the start with ImproperlyConfigured naming
the variable, and PRODUCTION=1 refuses a guessable SECRET_KEY or the simulator.
"""

from __future__ import annotations

import json
import math
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def env_str(name: str, default: str = "") -> str:
    """The variable as it is; set but empty stays empty (TOOLS_FOR_ANONYMOUS= means none)."""
    return os.environ.get(name, default)


def _env_value(name: str) -> str | None:
    """The variable without surrounding spaces, or None when unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or None


def env_bool(name: str, default: bool = False) -> bool:
    """1/0, true/false, yes/no or on/off in any case; anything else stops the start."""
    value = _env_value(name)
    if value is None:
        return default
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(
        f"{name}={value!r} is not a boolean: use 1/0, true/false, yes/no or on/off."
    )


def env_int(name: str, default: int) -> int:
    """A whole number; anything else stops the start."""
    value = _env_value(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number, e.g. 30.") from None


def env_float(name: str, default: float) -> float:
    """A finite number; anything else stops the start."""
    value = _env_value(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    # float() also reads "nan" and "inf", which no timeout or interval can use.
    if not math.isfinite(number):
        raise ImproperlyConfigured(f"{name}={value!r} is not a number, e.g. 2.5.")
    return number


def comma_list(value: str) -> list[str]:
    """The non-empty items of a comma-separated value."""
    return [item.strip() for item in value.split(",") if item.strip()]


def env_list(name: str, default: str = "") -> list[str]:
    """A comma-separated variable as a list."""
    return comma_list(env_str(name, default))


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    """One of choices, in any case; anything else stops the start."""
    value = _env_value(name)
    if value is None:
        return default
    if value.lower() not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of: {', '.join(choices)}.")
    return value.lower()


def env_secret(name: str, default: str = "") -> str:
    """NAME, or the contents of the file named by NAME_FILE (Docker and Kubernetes
    secrets), never both. An empty variable counts as unset."""
    value = os.environ.get(name, "")
    path = os.environ.get(f"{name}_FILE", "")
    if value and path:
        raise ImproperlyConfigured(f"{name} and {name}_FILE are both set: set only one.")
    if not path:
        return value or default
    try:
        content = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ImproperlyConfigured(
            f"{name}_FILE={path!r} cannot be read: {exc.strerror}."
        ) from None
    except UnicodeDecodeError:
        raise ImproperlyConfigured(f"{name}_FILE={path!r} is not UTF-8 text.") from None
    # `echo key > file` and editors end the file with a newline that is not the secret.
    content = content.rstrip("\r\n")
    if not content:
        raise ImproperlyConfigured(f"{name}_FILE={path!r} is empty.")
    return content


# Django's own rule for a secret key (security.W009 of check --deploy).
SECRET_KEY_MIN_LENGTH = 50
SECRET_KEY_MIN_UNIQUE_CHARACTERS = 5
DEV_SECRET_KEY = "dev-only-insecure-key-change-me-in-production-0123456789"  # noqa: S105


def refuse_weak_secret_key(key: str) -> None:
    """Stop a production start whose SECRET_KEY could be guessed: sessions, CSRF tokens
    and signed values would be forgeable."""
    if not key:
        problem = "is not set"
    elif key.startswith(("dev-only-", "django-insecure-")):
        problem = "is a development key"
    elif len(key) < SECRET_KEY_MIN_LENGTH or len(set(key)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS:
        problem = "is too short or too repetitive"
    else:
        return
    raise ImproperlyConfigured(
        f"SECRET_KEY {problem}: PRODUCTION=1 needs a random SECRET_KEY (or SECRET_KEY_FILE) of"
        f" at least {SECRET_KEY_MIN_LENGTH} characters, {SECRET_KEY_MIN_UNIQUE_CHARACTERS} of"
        " them different, e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'."
    )


# --- core -------------------------------------------------------------------------
# Everything the app writes (database, media, exports, workspaces) is its user's alone:
# bash runs as other uids. voiceplatform.private_files tightens what exists at start.
os.umask(0o077)
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
DEBUG = env_bool("DEBUG", False)
# PRODUCTION flips the defaults that must be strict on a public deployment.
PRODUCTION = env_bool("PRODUCTION", False)
SECRET_KEY = env_secret("SECRET_KEY", "" if PRODUCTION else DEV_SECRET_KEY)
if PRODUCTION:
    refuse_weak_secret_key(SECRET_KEY)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
SILENCED_SYSTEM_CHECKS = env_list("SILENCED_SYSTEM_CHECKS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "csp",
    "django_prometheus",
    "health_check",
    "axes",
    "sessions_app",
    "tools_app",
    "ops_app",
]

MIDDLEWARE = [
    "ops_app.middleware.MetricsBeforeMiddleware",
    "voiceplatform.middleware.RequestContextMiddleware",
    "voiceplatform.middleware.RefuseNulMiddleware",
    "voiceplatform.middleware.ProbeHostMiddleware",
    "ops_app.middleware.RateLimitHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    # Django's own (and django-csp's) with their hooks on the event loop in async
    # requests, not a thread hop each (voiceplatform.inline_middleware). Security, CSRF
    # and X-Frame-Options keep Django's names: check --deploy looks for those.
    "voiceplatform.inline_middleware.ContentSecurityPolicy",
    "voiceplatform.inline_middleware.Session",
    "voiceplatform.inline_middleware.Common",
    "django.middleware.csrf.CsrfViewMiddleware",
    "voiceplatform.inline_middleware.Authentication",
    "voiceplatform.inline_middleware.Messages",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "voiceplatform.middleware.ApiErrorMiddleware",
    # Login attempts per client address, before axes reads any of them.
    "ops_app.middleware.LoginRateLimitMiddleware",
    # axes turns a login refused for a lockout into its 429 page.
    "axes.middleware.AxesMiddleware",
    "ops_app.middleware.MetricsAfterMiddleware",
]

ROOT_URLCONF = "voiceplatform.urls"
ASGI_APPLICATION = "voiceplatform.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# --- data -------------------------------------------------------------------------
DATABASE_URL = env_secret("DATABASE_URL")
if not DATABASE_URL:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0))
    if DATABASE_URL
    else {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "db.sqlite3"}
}
if DATABASE_URL and DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # An unreachable database answers "no" within seconds instead of a TCP timeout.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("DB_CONNECT_TIMEOUT_SECONDS", 5)
    )
    # A pool per process: a request borrows a connection instead of opening one (a new
    # PostgreSQL backend each time) and closing it at its end. Not with persistent
    # connections (DB_CONN_MAX_AGE), which Django does not combine with a pool.
    if env_bool("DB_POOL", True) and not DATABASES["default"].get("CONN_MAX_AGE"):
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": env_int("DB_POOL_MIN_SIZE", 1),
            "max_size": env_int("DB_POOL_MAX_SIZE", 64),
            "timeout": env_float("DB_POOL_TIMEOUT_SECONDS", 2.0),
        }
        # The pool checks a connection before lending it: one that broke while idle
        # (the database restarted or was away) is replaced, not lent to fail a request
        # or a health check.
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# django-prometheus's wrappers of the same backends: queries, errors and connections
# counted (django_db_* on /metrics).
DATABASES["default"]["ENGINE"] = DATABASES["default"]["ENGINE"].replace(
    "django.db.backends.", "django_prometheus.db.backends."
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_secret("REDIS_URL")
# While Redis cannot be reached, cache, rate limits, breakers and the channel layer use
# process-local state (voiceplatform.outage) and try Redis again after this long.
REDIS_RETRY_SECONDS = env_float("REDIS_RETRY_SECONDS", 3.0)
# A Redis that does not answer within this long counts as down (cache and breakers).
REDIS_SOCKET_TIMEOUT_SECONDS = env_float("REDIS_SOCKET_TIMEOUT_SECONDS", 0.5)
# Connections each event loop keeps to Redis for the request paths' own calls
# (voiceplatform.aredis); more callers than this wait for one.
REDIS_LOOP_CONNECTIONS = env_int("REDIS_LOOP_CONNECTIONS", 32)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "voiceplatform.cache.FallbackRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "vp"),
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": REDIS_SOCKET_TIMEOUT_SECONDS,
                "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT_SECONDS,
            },
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "voiceplatform.channel_layer.FallbackRedisChannelLayer",
            "CONFIG": {
                # redis-py 8 times reads out after 5 s by default, as long as the
                # layer's own blocking pop: idle consumers would crash. The pop has its
                # own 5 s limit; keepalive notices a dead connection.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": None,
                        "socket_connect_timeout": REDIS_SOCKET_TIMEOUT_SECONDS,
                        "socket_keepalive": True,
                        # redis-py's asyncio pool refuses a command past 100 open
                        # connections, and a refusal reads as Redis away: a process
                        # holding a thousand talking calls sends more at once.
                        "max_connections": env_int("CHANNEL_LAYER_MAX_CONNECTIONS", 1000),
                    }
                ],
                "prefix": env_str("CHANNEL_PREFIX", "vp"),
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- files ------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
# Django would make uploaded files world-readable (0644) whatever the umask.
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME")
# Read here so they may come from *_FILE too; unset (None) leaves boto3 to its own
# credential chain (environment, profile, instance role).
AWS_ACCESS_KEY_ID = env_secret("AWS_ACCESS_KEY_ID") or None
AWS_SECRET_ACCESS_KEY = env_secret("AWS_SECRET_ACCESS_KEY") or None
# Where the daily PostgreSQL dumps go, and how long they are kept (manage.py backups).
BACKUP_BUCKET = env_str("BACKUP_BUCKET")
BACKUP_DIR = Path(env_str("BACKUP_DIR", str(VAR_DIR / "backups")))
BACKUP_RETENTION_DAYS = env_int("BACKUP_RETENTION_DAYS", 30)
STORAGES = {
    "default": (
        {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": AWS_STORAGE_BUCKET_NAME,
                "endpoint_url": env_str("AWS_S3_ENDPOINT_URL") or None,
                "default_acl": None,
                "querystring_auth": True,
            },
        }
        if AWS_STORAGE_BUCKET_NAME
        else {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    ),
    # PostgreSQL dumps (manage.py backups): under backups/ in BACKUP_BUCKET, else a
    # directory of BACKUP_DIR.
    "backups": (
        {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BACKUP_BUCKET,
                "location": "backups",
                "endpoint_url": env_str("AWS_S3_ENDPOINT_URL") or None,
                "default_acl": None,
            },
        }
        if BACKUP_BUCKET
        else {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(BACKUP_DIR)},
        }
    ),
    # Collected static files are public (and may be served by another user): not 0600.
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage",
        "OPTIONS": {"file_permissions_mode": 0o644, "directory_permissions_mode": 0o755},
    },
}

# --- security ---------------------------------------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if PRODUCTION else None
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_REDIRECT_EXEMPT = [r"^health", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
X_FRAME_OPTIONS = "DENY"
# The client page loads only our own script and style, talks only to us, and plays
# microphone and remote audio streams.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "media-src": ["'self'", "blob:", "mediastream:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}
# Static files straight from the apps in development; collected (collectstatic) in
# production images.
SERVESTATIC_USE_FINDERS = not PRODUCTION
SERVESTATIC_AUTOREFRESH = DEBUG

# --- logins (admin, and /ops/ through it) ----------------------------------------
# After this many failed logins for one username from one address, that pair is locked
# out (even with the right password) until this many minutes pass without another try.
LOGIN_FAILURE_LIMIT = max(1, env_int("LOGIN_FAILURE_LIMIT", 5))
LOGIN_LOCKOUT_MINUTES = max(1, env_int("LOGIN_LOCKOUT_MINUTES", 15))
# Login attempts (whatever the usernames) one client address may make a minute.
LOGIN_RATE_PER_MINUTE = max(1, env_int("LOGIN_RATE_PER_MINUTE", 20))
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# What every other per-address limit counts (X-Forwarded-For only when trusted): the
# address, or for IPv6 its /64, so rotating within a /64 does not start a fresh count.
AXES_CLIENT_IP_CALLABLE = "voiceplatform.api.lockout_address"
AXES_RESET_ON_SUCCESS = True
# Logins are in the audit log (ops_app.logins); ops_app.admin shows the lockouts.
AXES_DISABLE_ACCESS_LOG = True
AXES_ENABLE_ADMIN = False
AXES_VERBOSE = False
# The lockout page: the admin's look, for how long, what to do (ops_app.logins).
AXES_LOCKOUT_CALLABLE = "ops_app.logins.locked_out_page"
# axes' log lines name who was locked out and from where (operators need both); it
# never logs a password.
AXES_SENSITIVE_PARAMETERS: list[str] = []

# --- audit log --------------------------------------------------------------------
# A refusal a caller can repeat fast (a tool refused by policy, a bad webhook signature)
# is recorded once per source in this window; rate-limit refusals once per limit window.
AUDIT_REFUSAL_WINDOW_SECONDS = env_int("AUDIT_REFUSAL_WINDOW_SECONDS", 300)

# --- voice sessions ---------------------------------------------------------------
# Behind a load balancer the client address comes from X-Forwarded-For.
USE_X_FORWARDED_FOR = env_bool("USE_X_FORWARDED_FOR", False)
TRUSTED_PROXY_COUNT = max(1, env_int("TRUSTED_PROXY_COUNT", 1))
SESSION_CAPACITY = env_int("SESSION_CAPACITY", 50)
# A session that has not connected (posted its SDP offer) this long after /session
# stops holding capacity and is expired by the sweep.
SESSION_CONNECT_GRACE_SECONDS = env_int("SESSION_CONNECT_GRACE_SECONDS", 60)
# Live sessions one client address, and one user or API key, may hold at once.
SESSION_LIVE_PER_IP = env_int("SESSION_LIVE_PER_IP", 10)
SESSION_LIVE_PER_CALLER = env_int("SESSION_LIVE_PER_CALLER", 20)
# What one session's browser relay may store and how often it may post: a fifteen
# minute conversation is a few hundred items and well under a megabyte.
SESSION_TRANSCRIPT_MAX_ITEMS = env_int("SESSION_TRANSCRIPT_MAX_ITEMS", 2000)
SESSION_TRANSCRIPT_MAX_CHARS = env_int("SESSION_TRANSCRIPT_MAX_CHARS", 2 * 1024 * 1024)
SESSION_EVENTS_PER_MINUTE = env_int("SESSION_EVENTS_PER_MINUTE", 240)
# POST /tools/<name> per session, and signed webhooks per sender address, a minute.
TOOLS_RATE_PER_MINUTE = env_int("TOOLS_RATE_PER_MINUTE", 60)
# Tool calls one session, and one caller (its API key or user, else its client address),
# may have queued or running at once (429 too_many_running): one session cannot hold
# every worker. Keep the per-session cap below a worker's concurrency.
TOOLS_MAX_RUNNING_PER_SESSION = env_int("TOOLS_MAX_RUNNING_PER_SESSION", 3)
TOOLS_MAX_RUNNING_PER_CALLER = env_int("TOOLS_MAX_RUNNING_PER_CALLER", 6)
# One call's arguments (compact JSON, UTF-8 bytes; 413 arguments_too_large), and all of
# one session's calls' together (409 tool_arguments_full). 128 KiB holds write_file's
# content for a source file of a few thousand lines, edit_file's two strings, and a
# bash script far beyond what a spoken turn dictates; 2 MiB a session is the
# transcript's own cap (SESSION_TRANSCRIPT_MAX_CHARS), which the model's calls also fill.
TOOL_ARGUMENTS_MAX_BYTES = env_int("TOOL_ARGUMENTS_MAX_BYTES", 128 * 1024)
TOOL_ARGUMENTS_MAX_BYTES_PER_SESSION = env_int(
    "TOOL_ARGUMENTS_MAX_BYTES_PER_SESSION", 2 * 1024 * 1024
)
WEBHOOK_RATE_PER_MINUTE = env_int("WEBHOOK_RATE_PER_MINUTE", 600)
POD_NAME = env_str("POD_NAME") or env_str("HOSTNAME") or "local"
# Who sets the VOICE_AFFINITY cookie: "app" (/session names this pod, for a proxy that
# routes on the cookie's value) or "off" where the ingress owns a cookie of that name
# (ingress-nginx affinity): two writers of one cookie would undo each other.
SESSION_AFFINITY_COOKIE = env_choice("SESSION_AFFINITY_COOKIE", ("app", "off"), "app")
REGION = env_str("REGION", "local")
SESSION_MAX_SECONDS = env_int("SESSION_MAX_SECONDS", 900)
SESSION_ALLOW_ANONYMOUS = env_bool("SESSION_ALLOW_ANONYMOUS", not PRODUCTION)
SESSION_RATE_LIMIT_PER_IP = env_int("SESSION_RATE_LIMIT_PER_IP", 20)
SESSION_RATE_LIMIT_PER_USER = env_int("SESSION_RATE_LIMIT_PER_USER", 20)
SESSION_DEFAULT_INSTRUCTIONS = env_str(
    "SESSION_DEFAULT_INSTRUCTIONS",
    "You are a helpful voice assistant. Keep answers short and spoken-friendly.",
)
# What a resumed session's instructions carry of the one it resumes (POST /session
# {"resume": id}): its first user turn and its last turns, at most this many tokens
# (estimated as characters / 4).
RESUME_CONTEXT_MAX_TOKENS = env_int("RESUME_CONTEXT_MAX_TOKENS", 1000)
# Live-event WebSockets open at once per session and per client address, and how long
# a socket that sent no token in its Sec-WebSocket-Protocol has to send it.
WS_MAX_PER_SESSION = env_int("WS_MAX_PER_SESSION", 3)
WS_MAX_PER_IP = env_int("WS_MAX_PER_IP", 20)
WS_AUTH_TIMEOUT_SECONDS = env_float("WS_AUTH_TIMEOUT_SECONDS", 5.0)
SDP_MAX_BYTES = env_int("SDP_MAX_BYTES", 64 * 1024)
JSON_MAX_BYTES = env_int("JSON_MAX_BYTES", 256 * 1024)
SIDEBAND_ENABLED = env_bool("SIDEBAND_ENABLED", True)
# When staff end one call, the model's goodbye may take this long before the hangup.
STAFF_GOODBYE_SECONDS = env_float("STAFF_GOODBYE_SECONDS", 8.0)
SIDEBAND_DRAIN_SECONDS = env_float("SIDEBAND_DRAIN_SECONDS", 2.0)
# A call's sideband is held under a lease in Redis that lapses this long after its
# holder last renewed it (every SIDEBAND_HEARTBEAT_SECONDS); each web process sweeps
# every SIDEBAND_SWEEP_SECONDS for calls nobody holds and takes them over (0: never).
SIDEBAND_LEASE_SECONDS = env_float("SIDEBAND_LEASE_SECONDS", 5.0)
SIDEBAND_HEARTBEAT_SECONDS = env_float("SIDEBAND_HEARTBEAT_SECONDS", 1.0)
SIDEBAND_SWEEP_SECONDS = env_float("SIDEBAND_SWEEP_SECONDS", 1.0)
# Threads (each with one database connection) that all held calls share for their
# database work.
SIDEBAND_DB_THREADS = env_int("SIDEBAND_DB_THREADS", 4)
# What held calls' sidebands say of their transcripts is written in batches
# (sessions_app.recorder): a batch gathers for at most this long, or until it holds
# this many events (the calls then wait for the writer before handing in more).
SIDEBAND_RECORD_SECONDS = env_float("SIDEBAND_RECORD_SECONDS", 0.1)
SIDEBAND_RECORD_BATCH_MAX = env_int("SIDEBAND_RECORD_BATCH_MAX", 5000)
# Threads (each with at most one database connection at a time) that HTTP requests
# borrow for their synchronous work, instead of a new thread per request.
REQUEST_THREADS = env_int("REQUEST_THREADS", 8)
# SIGTERM drains the process (no new sessions, sidebands handed over) for at most
# DRAIN_HANDOVER_SECONDS before it stops; `manage.py drain` waits DRAIN_TIMEOUT_SECONDS
# for the pod's processes to let their calls go.
DRAIN_ON_SIGTERM = env_bool("DRAIN_ON_SIGTERM", True)
DRAIN_HANDOVER_SECONDS = env_float("DRAIN_HANDOVER_SECONDS", 5.0)
DRAIN_TIMEOUT_SECONDS = env_float("DRAIN_TIMEOUT_SECONDS", 30.0)
DRAIN_RETRY_AFTER_SECONDS = env_int("DRAIN_RETRY_AFTER_SECONDS", 2)
MAINTENANCE_MODE = env_bool("MAINTENANCE_MODE", False)
MAINTENANCE_RETRY_AFTER_SECONDS = env_int("MAINTENANCE_RETRY_AFTER_SECONDS", 300)
MAINTENANCE_ETA = env_str("MAINTENANCE_ETA")  # shown on the maintenance page, e.g. "14:30 UTC"
RECORDING_MAX_BYTES = env_int("RECORDING_MAX_BYTES", 25 * 1024 * 1024)
# Recordings may still be uploaded this long after their session ended.
RECORDING_UPLOAD_GRACE_SECONDS = env_int("RECORDING_UPLOAD_GRACE_SECONDS", 300)
CLIENT_STATS_INTERVAL_SECONDS = env_int("CLIENT_STATS_INTERVAL_SECONDS", 10)
# Request bodies are capped per endpoint (JSON_MAX_BYTES, SDP_MAX_BYTES, recordings),
# before Django reads them (voiceplatform.body_limits); every other route, the admin
# included, at REQUEST_MAX_BYTES (Django's own default upload cap).
REQUEST_MAX_BYTES = env_int("REQUEST_MAX_BYTES", 2_621_440)
# What a view may read into memory (request.body): the largest of those caps. A recording
# is spooled to a temporary file instead (voiceplatform.api.spool_body).
DATA_UPLOAD_MAX_MEMORY_SIZE = max(REQUEST_MAX_BYTES, JSON_MAX_BYTES, SDP_MAX_BYTES)


# --- retention and redaction ----------------------------------------------------
# How many days after its session ended (or began, if it never ended) each kind of
# data is kept; 0 keeps it forever. Transcripts: conversation items and the exported
# files; tool outputs: output, error and arguments of tool runs (the run itself stays,
# so counts and history hold); recordings: the audio file. Session rows stay.
def _days(name: str, default: int) -> int:
    days = env_int(name, default)
    if days < 0:
        raise ImproperlyConfigured(f"{name}={days} is negative: use 0 to keep forever.")
    return days


RETENTION_TRANSCRIPT_DAYS = _days("RETENTION_TRANSCRIPT_DAYS", 90)
RETENTION_TOOL_OUTPUT_DAYS = _days("RETENTION_TOOL_OUTPUT_DAYS", 30)
RETENTION_RECORDING_DAYS = _days("RETENTION_RECORDING_DAYS", 30)
RETENTION_SWEEP_SECONDS = env_float("RETENTION_SWEEP_SECONDS", 3600.0)
RETENTION_BATCH_SIZE = max(1, env_int("RETENTION_BATCH_SIZE", 500))
# Redaction when transcripts and tool outputs are stored (voiceplatform.redaction).
# Secrets (API keys, tokens, passwords, private keys, card numbers) are on: nobody
# reading a transcript needs them, and a stored card number is a PCI DSS liability.
# Personal data (e-mail addresses, phone numbers) is off: callers often give them so
# that support can use them, and redaction at write time cannot be undone.
REDACT_SECRETS = env_bool("REDACT_SECRETS", True)
REDACT_PII = env_bool("REDACT_PII", False)

# --- realtime upstream ------------------------------------------------------------
# With no key, the built-in simulator (mounted at /simulator) is the upstream, except
# in production: its key and webhook secret are published defaults, so a mounted
# simulator would let anyone drive sessions and sign webhooks.
OPENAI_API_KEY = env_secret("OPENAI_API_KEY")
SIMULATOR_ENABLED = env_bool("SIMULATOR_ENABLED", not OPENAI_API_KEY and not PRODUCTION)
if PRODUCTION and SIMULATOR_ENABLED:
    raise ImproperlyConfigured(
        "SIMULATOR_ENABLED is on with PRODUCTION=1: the simulator is never served in"
        " production; unset SIMULATOR_ENABLED and set OPENAI_API_KEY."
    )
SIMULATOR_API_KEY = env_secret("SIMULATOR_API_KEY", "sk-sim-local")
SIMULATOR_WEBHOOK_SECRET = env_secret(
    "SIMULATOR_WEBHOOK_SECRET", "whsec_c2ltdWxhdG9yLXdlYmhvb2stc2VjcmV0LWxvY2Fs"
)
SIMULATOR_SPEECH_AFTER_SECONDS = env_float("SIMULATOR_SPEECH_AFTER_SECONDS", 1.0)
SIMULATOR_ICE_LOOPBACK_ONLY = env_bool("SIMULATOR_ICE_LOOPBACK_ONLY", True)
PORT = env_int("PORT", 8000)
OPENAI_BASE_URL = env_str(
    "OPENAI_BASE_URL",
    "https://api.openai.com" if OPENAI_API_KEY else f"http://127.0.0.1:{PORT}/simulator",
)
OPENAI_MODEL = env_str("OPENAI_MODEL", "gpt-realtime")
OPENAI_TRANSCRIPTION_MODEL = env_str("OPENAI_TRANSCRIPTION_MODEL", "gpt-4o-mini-transcribe")
OPENAI_DEFAULT_VOICE = env_str("OPENAI_DEFAULT_VOICE", "marin")
OPENAI_TIMEOUT_SECONDS = env_float("OPENAI_TIMEOUT_SECONDS", 10.0)
OPENAI_TOTAL_TIMEOUT_SECONDS = env_float("OPENAI_TOTAL_TIMEOUT_SECONDS", 25.0)
OPENAI_MAX_RETRIES = env_int("OPENAI_MAX_RETRIES", 2)
OPENAI_CLIENT_SECRET_TTL_SECONDS = env_int("OPENAI_CLIENT_SECRET_TTL_SECONDS", 600)
# US dollars per million tokens, by model name (a dated snapshot such as
# gpt-realtime-2025-08-28 takes the longest name it starts with). Defaults: OpenAI's
# published prices (https://openai.com/api/pricing/, as listed in October 2025).
# MODEL_PRICES_JSON replaces the table: {"model": {"text_input": 4.0, ...}, ...}.
MODEL_PRICES_DEFAULT = {
    "gpt-realtime": {
        "text_input": 4.00,
        "text_cached_input": 0.40,
        "text_output": 16.00,
        "audio_input": 32.00,
        "audio_cached_input": 0.40,
        "audio_output": 64.00,
    },
    "gpt-realtime-mini": {
        "text_input": 0.60,
        "text_cached_input": 0.06,
        "text_output": 2.40,
        "audio_input": 10.00,
        "audio_cached_input": 0.30,
        "audio_output": 20.00,
    },
    "gpt-4o-realtime-preview": {
        "text_input": 5.00,
        "text_cached_input": 2.50,
        "text_output": 20.00,
        "audio_input": 40.00,
        "audio_cached_input": 2.50,
        "audio_output": 80.00,
    },
    "gpt-4o-mini-realtime-preview": {
        "text_input": 0.60,
        "text_cached_input": 0.30,
        "text_output": 2.40,
        "audio_input": 10.00,
        "audio_cached_input": 0.30,
        "audio_output": 20.00,
    },
    # The agents' model (AGENT_MODEL) answers in text only: its audio prices are its
    # text prices, never used.
    "gpt-5-mini": {
        "text_input": 0.25,
        "text_cached_input": 0.025,
        "text_output": 2.00,
        "audio_input": 0.25,
        "audio_cached_input": 0.025,
        "audio_output": 2.00,
    },
}
PRICE_KINDS = tuple(MODEL_PRICES_DEFAULT["gpt-realtime"])


def env_prices(name: str, default: dict) -> dict:
    """A price table as JSON: every model with a non-negative number for every kind."""
    value = _env_value(name)
    if value is None:
        return default
    try:
        table = json.loads(value)
    except ValueError:
        table = None
    if not isinstance(table, dict) or not table:
        raise ImproperlyConfigured(f"{name} is not a JSON object of models to prices.")
    for model, prices in table.items():
        if not isinstance(prices, dict) or set(prices) != set(PRICE_KINDS):
            raise ImproperlyConfigured(
                f"{name}: {model!r} needs exactly these prices: {', '.join(PRICE_KINDS)}."
            )
        for kind, price in prices.items():
            if isinstance(price, bool) or not isinstance(price, int | float) or price < 0:
                raise ImproperlyConfigured(f"{name}: {model}.{kind} is not a price, e.g. 4.0.")
    return table


MODEL_PRICES = env_prices("MODEL_PRICES_JSON", MODEL_PRICES_DEFAULT)

# Comma-separated: more than one during secret rotation. The simulator's published
# secret is accepted only where the simulator may be the upstream, never in production.
OPENAI_WEBHOOK_SECRETS = comma_list(
    env_secret(
        "OPENAI_WEBHOOK_SECRET",
        "" if OPENAI_API_KEY or PRODUCTION else SIMULATOR_WEBHOOK_SECRET,
    )
)

# --- tools (Amplifier bridge) -----------------------------------------------------
TOOL_WORKSPACE_ROOT = Path(env_str("TOOL_WORKSPACE_ROOT", str(VAR_DIR / "workspaces")))
# A tool call waits at most this long for its result (the seed's /tools/* timeout).
TOOL_TIMEOUT_SECONDS = env_int("TOOL_TIMEOUT_SECONDS", 300)
TOOL_BASH_TIMEOUT_SECONDS = env_int("TOOL_BASH_TIMEOUT_SECONDS", 30)
TOOL_BASH_MAX_TIMEOUT_SECONDS = env_int("TOOL_BASH_MAX_TIMEOUT_SECONDS", 240)
# One bash call's budget: memory, processes (tasks) and CPU for everything it runs
# together, where a cgroup can be made per call (tools_app.cgroups); otherwise memory
# and processes are per-process rlimits only. Files it writes: at most FILE_SIZE each.
TOOL_BASH_MEMORY_BYTES = env_int("TOOL_BASH_MEMORY_BYTES", 512 * 1024 * 1024)
TOOL_BASH_MAX_PROCESSES = env_int("TOOL_BASH_MAX_PROCESSES", 64)
TOOL_BASH_CPU_QUOTA = env_float("TOOL_BASH_CPU_QUOTA", 1.0)  # cores; 0 for no limit
TOOL_BASH_FILE_SIZE_BYTES = env_int("TOOL_BASH_FILE_SIZE_BYTES", 64 * 1024 * 1024)
TOOL_BASH_TMP_BYTES = env_int("TOOL_BASH_TMP_BYTES", 64 * 1024 * 1024)  # its private /tmp
# Where per-call cgroups are made: empty for the worker's own (v1) or its parent (v2).
TOOL_BASH_CGROUP_PARENT = env_str("TOOL_BASH_CGROUP_PARENT")
# What a session's workspace may hold on disk, and how long it is kept after its end.
TOOL_WORKSPACE_MAX_BYTES = env_int("TOOL_WORKSPACE_MAX_BYTES", 256 * 1024 * 1024)
TOOL_WORKSPACE_RETENTION_SECONDS = env_int("TOOL_WORKSPACE_RETENTION_SECONDS", 3600)
# Each workspace a tmpfs of that size (tools_app.mounts), all of a host's together within
# TOTAL (they live in memory); off: plain directories, measured only, and bash runs
# without a hard cap (where mounting is impossible and this is on, bash is refused).
TOOL_WORKSPACE_HARD_CAP = env_bool("TOOL_WORKSPACE_HARD_CAP", True)
TOOL_WORKSPACE_TOTAL_BYTES = env_int("TOOL_WORKSPACE_TOTAL_BYTES", 8 * 1024 * 1024 * 1024)
TOOL_OUTPUT_MAX_BYTES = env_int("TOOL_OUTPUT_MAX_BYTES", 64 * 1024)
# Workspaces are pod-local: a session's calls go to the worker holding its workspace
# (tools_app.placement) while that worker's lease, renewed every third of this, holds.
TOOL_WORKER_LEASE_SECONDS = env_int("TOOL_WORKER_LEASE_SECONDS", 15)
TOOL_READ_MAX_BYTES = env_int("TOOL_READ_MAX_BYTES", 1024 * 1024)
# bash runs as uid BASE + hash(session) when we are root; 0 turns that off.
TOOL_SANDBOX_UID_BASE = env_int("TOOL_SANDBOX_UID_BASE", 200_000)
TOOL_ISOLATION = env_str("TOOL_ISOLATION", "auto")  # auto (bwrap when it works) | rlimits
# Tasks (tools_app.background): a call not finished within DETACH_AFTER goes on in the
# background (at once for long-running tools, and those named in TASK_TOOLS); a task
# outlives neither its session's end plus GRACE nor MAX; a cancelled one is killed
# CANCEL_GRACE after it was asked to stop.
TASK_DETACH_AFTER_SECONDS = env_float("TASK_DETACH_AFTER_SECONDS", 3.0)
TASK_TOOLS = env_list("TASK_TOOLS", "")
TASK_GRACE_SECONDS = env_int("TASK_GRACE_SECONDS", 60)
TASK_MAX_SECONDS = env_int("TASK_MAX_SECONDS", 900)
TASK_CANCEL_GRACE_SECONDS = env_float("TASK_CANCEL_GRACE_SECONDS", 5.0)
# Tool names per kind of caller; "*" is every registered tool.
TOOLS_FOR_ANONYMOUS = env_list("TOOLS_FOR_ANONYMOUS", "" if PRODUCTION else "*")
TOOLS_FOR_USERS = env_list("TOOLS_FOR_USERS", "*")
TOOLS_FOR_API_KEYS = env_list("TOOLS_FOR_API_KEYS", "*")
WEB_SEARCH_URL = env_str("WEB_SEARCH_URL")
WEB_SEARCH_API_KEY = env_secret("WEB_SEARCH_API_KEY")
WEB_FETCH_ALLOW_PRIVATE = env_bool("WEB_FETCH_ALLOW_PRIVATE", False)
# Agents (tools_app.agents): Amplifier bundles, Markdown with YAML front matter, one a
# file in AGENTS_DIR; run by `delegate` against AGENT_MODEL (Responses API, same
# upstream and key as the voice model). A bundle's own caps may only be lower.
AGENTS_DIR = Path(env_str("AGENTS_DIR", str(BASE_DIR / "agents")))
AGENT_MODEL = env_str("AGENT_MODEL", "gpt-5-mini")
AGENT_MAX_STEPS = env_int("AGENT_MAX_STEPS", 20)
AGENT_MAX_TOKENS = env_int("AGENT_MAX_TOKENS", 200_000)
AGENT_MAX_SECONDS = env_int("AGENT_MAX_SECONDS", 600)
AGENT_REQUEST_TIMEOUT_SECONDS = env_float("AGENT_REQUEST_TIMEOUT_SECONDS", 120.0)
# Post-call summaries (tools_app.agents.summaries): when a session ends, SUMMARY_MODEL
# writes what it came to, through the agents' provider. Sessions in which fewer than
# MIN_WORDS were said are skipped. An upstream failure is tried again up to MAX_RETRIES
# times, RETRY_SECONDS later, then twice that, and so on; then the summary is failed.
SUMMARY_ENABLED = env_bool("SUMMARY_ENABLED", True)
SUMMARY_MODEL = env_str("SUMMARY_MODEL", AGENT_MODEL)
SUMMARY_MIN_WORDS = env_int("SUMMARY_MIN_WORDS", 12)
SUMMARY_MAX_RETRIES = env_int("SUMMARY_MAX_RETRIES", 3)
SUMMARY_RETRY_SECONDS = env_float("SUMMARY_RETRY_SECONDS", 10.0)
AMPLIFIER_BREAKER_FAILURES = env_int("AMPLIFIER_BREAKER_FAILURES", 3)
AMPLIFIER_BREAKER_RESET_SECONDS = env_int("AMPLIFIER_BREAKER_RESET_SECONDS", 10)
# The OpenAI breaker (seed 7.3): open after 5 failed upstream calls, half-open after 30 s.
OPENAI_BREAKER_FAILURES = env_int("OPENAI_BREAKER_FAILURES", 5)
OPENAI_BREAKER_RESET_SECONDS = env_int("OPENAI_BREAKER_RESET_SECONDS", 30)
# GET /metrics answers only this bearer token when it is set (keep metrics internal).
METRICS_BEARER_TOKEN = env_secret("METRICS_BEARER_TOKEN")
WORKER_PING_TIMEOUT_SECONDS = env_float("WORKER_PING_TIMEOUT_SECONDS", 1.0)
# /health's disk check warns (the service degraded) at this share of MEDIA_ROOT's disk used.
HEALTH_DISK_MAX_PERCENT = env_float("HEALTH_DISK_MAX_PERCENT", 90.0)

# Traces (voiceplatform.tracing), on OpenTelemetry's own variables: on when an OTLP
# endpoint is set, nothing at all otherwise. The SDK and the exporter read the others
# themselves (OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES,
# OTEL_BSP_*, ...). gRPC by default, as the collector's port 4317 expects.
OTLP_PROTOCOLS = ("grpc", "http/protobuf")
OTEL_TRACES_ENDPOINT = (
    env_str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env_str("OTEL_EXPORTER_OTLP_ENDPOINT")
).strip()
OTEL_TRACES_PROTOCOL = env_choice(
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    OTLP_PROTOCOLS,
    env_choice("OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOLS, "grpc"),
)
TRACING_ENABLED = bool(OTEL_TRACES_ENDPOINT) and not env_bool("OTEL_SDK_DISABLED", False)

# Celery worker and beat prove they are alive by touching a file in here (their
# container health checks read its age: python -m voiceplatform.healthcheck).
HEARTBEAT_DIR = Path(env_str("HEARTBEAT_DIR", str(VAR_DIR / "heartbeat")))
HEARTBEAT_INTERVAL_SECONDS = env_float("HEARTBEAT_INTERVAL_SECONDS", 10.0)
HEARTBEAT_MAX_AGE_SECONDS = env_float("HEARTBEAT_MAX_AGE_SECONDS", 60.0)

# --- celery -----------------------------------------------------------------------
# In-process: the memory transport, named with its host so that kombu does not warn
# about a missing one each time an eager task is sent.
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "celery")
# Tool calls queue by how long their tool may take (tools_app.registry): a file read
# never waits behind a queue of bash commands and web fetches, as a worker takes from
# its queues in turn. A worker started without -Q consumes every queue listed here.
TOOL_QUEUE_FAST = f"{CELERY_TASK_DEFAULT_QUEUE}.tools-fast"
TOOL_QUEUE_SLOW = f"{CELERY_TASK_DEFAULT_QUEUE}.tools-slow"
CELERY_TASK_QUEUES = [
    Queue(name, routing_key=name)
    for name in (CELERY_TASK_DEFAULT_QUEUE, TOOL_QUEUE_FAST, TOOL_QUEUE_SLOW)
]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Pool processes a worker runs (its --concurrency wins): one more than a session may
# hold, so one session's slow calls never take a whole worker.
CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", TOOLS_MAX_RUNNING_PER_SESSION + 1)
# Celery's Django fixup closes a prefork worker's whole connection pool around every
# task unless told to reuse it: each task then opened a new PostgreSQL connection.
# Tasks return their connections to the pool instead (voiceplatform.celery), and the
# fixup closes the pool only every this many tasks.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)
# A message unacknowledged this long is delivered again: longer than the longest tool.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int(
        "CELERY_VISIBILITY_TIMEOUT", max(TOOL_TIMEOUT_SECONDS, TASK_MAX_SECONDS) + 120
    ),
    # How often workers look for messages a dead worker left unacknowledged:
    # about interval x throttle seconds.
    "unacked_restore_interval": env_int("CELERY_UNACKED_RESTORE_INTERVAL", 10),
    "unacked_restore_throttle": env_int("CELERY_UNACKED_RESTORE_THROTTLE", 6),
    # One worker at a time restores them; a worker killed while it does holds the others
    # off for this long.
    "unacked_mutex_expire": env_int("CELERY_UNACKED_MUTEX_EXPIRE", 300),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Beat's scheduler touches its heartbeat on every tick; it ticks at least this often.
CELERY_BEAT_SCHEDULER = "voiceplatform.heartbeat:HeartbeatScheduler"
CELERY_BEAT_MAX_LOOP_INTERVAL = 10
CELERY_TASK_ANNOTATIONS = {
    "tools_app.tasks.execute_tool_task": {
        # A background task (an agent) may run up to TASK_MAX_SECONDS.
        "soft_time_limit": max(TOOL_TIMEOUT_SECONDS, TASK_MAX_SECONDS),
        "time_limit": max(TOOL_TIMEOUT_SECONDS, TASK_MAX_SECONDS) + 30,
    }
}
# Without a broker (embedded default) the server itself runs this schedule on a thread.
PERIODIC_IN_PROCESS = env_bool("PERIODIC_IN_PROCESS", CELERY_TASK_ALWAYS_EAGER)
CELERY_BEAT_SCHEDULE = {
    "expire-overdue-sessions": {
        "task": "sessions_app.tasks.expire_sessions_task",
        "schedule": env_float("SESSION_EXPIRY_SWEEP_SECONDS", 30.0),
    },
    "fail-lost-tool-executions": {
        "task": "tools_app.tasks.fail_lost_executions_task",
        "schedule": 60.0,
    },
    "remove-expired-workspaces": {
        "task": "tools_app.tasks.remove_expired_workspaces_task",
        "schedule": 600.0,
    },
    "apply-retention": {
        "task": "sessions_app.tasks.apply_retention_task",
        "schedule": RETENTION_SWEEP_SECONDS,
    },
}

# --- logging ----------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")

# --- garbage collector (server processes) ------------------------------------------
# What start-up built is frozen out of later collections; young collections every
# gen0 allocations, older ones after gen1 / gen2 younger ones ("": CPython's own).
GC_FREEZE = env_bool("GC_FREEZE", True)
GC_THRESHOLDS = env_str("GC_THRESHOLDS", "10000,20,20")
if GC_THRESHOLDS.strip():
    try:
        _gc = [int(part) for part in GC_THRESHOLDS.split(",")]
    except ValueError:
        _gc = []
    if len(_gc) != 3 or min(_gc) < 1:
        raise ImproperlyConfigured("GC_THRESHOLDS must be three positive whole numbers: a,b,c.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "voiceplatform.logconfig.json_formatter"}},
    "filters": {
        "serving_line": {"()": "voiceplatform.logconfig.ServingLine"},
        "quiet_periodic_runs": {"()": "voiceplatform.logconfig.QuietPeriodicRuns"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # One start-up line with the URL served (`serving`), none of daphne's others.
        "daphne.server": {"level": "INFO", "filters": ["serving_line"]},
        "celery.app.trace": {"filters": ["quiet_periodic_runs"]},
        "aioice": {"level": "WARNING"},
        "aiortc": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
        # django-health-check logs every failing probe with its traceback (every 2 s in
        # an outage); ops_app.health logs each check's change of state once instead.
        "health_check": {"level": "ERROR"},
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
