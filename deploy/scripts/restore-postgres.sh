#!/usr/bin/env bash
# PostgreSQL restore (seed 9.2, scenario 3): a dump from backup-postgres.sh into an
# empty database, in one transaction (all of it or nothing), without the source's
# owners and grants. Then point DATABASE_URL at it (deploy/RUNBOOK.md).
#
#   TARGET_DATABASE_URL=postgres://user:password@host:5432/voice_restored \
#     deploy/scripts/restore-postgres.sh voiceplatform-20260101T020000Z.dump
#
# The target must exist and be empty (createdb, or the provider's console): a database
# that already holds the app's tables is refused rather than mixed with the dump.
set -euo pipefail

dump=${1:?usage: TARGET_DATABASE_URL=postgres://... restore-postgres.sh DUMP_FILE}
: "${TARGET_DATABASE_URL:?set TARGET_DATABASE_URL to the empty database to restore into}"
[ -r "$dump" ] || { echo "cannot read $dump" >&2; exit 1; }

if [ "$(psql "$TARGET_DATABASE_URL" -XAtc "SELECT to_regclass('public.django_migrations') IS NOT NULL")" = "t" ]; then
  echo "refusing: the target database already has the app's tables" >&2
  exit 1
fi

pg_restore --dbname="$TARGET_DATABASE_URL" --no-owner --no-privileges \
  --single-transaction --exit-on-error "$dump"

psql "$TARGET_DATABASE_URL" -XAt -F ' ' -f "$(dirname "$0")/row-counts.sql"
