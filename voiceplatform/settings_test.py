"""Test settings: the real PostgreSQL and Redis, never SQLite or fakes."""

from __future__ import annotations

import os

# A URL given as a file (DATABASE_URL_FILE) wins; setting both would stop the start.
if not os.environ.get("DATABASE_URL_FILE"):
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/voiceplatform")
if not os.environ.get("REDIS_URL_FILE"):
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/9")
os.environ.setdefault("SIDEBAND_ENABLED", "1")

from voiceplatform.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tasks run in the test process unless a test starts a real worker (which sets this off).
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", True)  # noqa: F405
MEDIA_ROOT = VAR_DIR / "test-media"  # noqa: F405
TOOL_WORKSPACE_ROOT = VAR_DIR / "test-workspaces"  # noqa: F405
# Tests run periodic work themselves, when they mean to: no sideband sweep and no
# SIGTERM handler in the test process (servers a test starts set their own).
PERIODIC_IN_PROCESS = False
SIDEBAND_SWEEP_SECONDS = env_float("SIDEBAND_SWEEP_SECONDS", 0.0)  # noqa: F405
DRAIN_ON_SIGTERM = False
# Sessions the suite ends are summarized only where a test means them to be (those of
# post-call summaries turn this on): a summary would otherwise run after every ended
# conversation, past the end of the test that ended it.
SUMMARY_ENABLED = env_bool("SUMMARY_ENABLED", False)  # noqa: F405
# The test process's async tests leave connections in threads that never give them back
# (conftest closes them at the end), so a pool would run dry here; the servers and
# workers tests start read DB_POOL as in production and keep theirs.
DATABASES["default"].get("OPTIONS", {}).pop("pool", None)  # noqa: F405
