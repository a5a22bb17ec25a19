#!/usr/bin/env bash
# PostgreSQL backup (seed 9.1): one pg_dump of the database in custom format
# (compressed, restorable whole or table by table), checked by reading back its table of
# contents before it is given its final name. Prints the dump's path.
#
#   DATABASE_URL=postgres://user:password@host:5432/voice deploy/scripts/backup-postgres.sh [DIR]
#
# DATABASE_URL_FILE (a file holding the URL, as the app reads it) works too. DIR defaults
# to $BACKUP_DIR or the current directory. Copy the file off the database host (object
# storage, another region); restore with restore-postgres.sh. Managed databases also
# keep their own snapshots and WAL for point-in-time recovery: this is the portable copy.
set -euo pipefail

if [ -n "${DATABASE_URL_FILE:-}" ]; then
  DATABASE_URL=$(<"$DATABASE_URL_FILE")
fi
: "${DATABASE_URL:?set DATABASE_URL (or DATABASE_URL_FILE) to the database to back up}"

out_dir=${1:-${BACKUP_DIR:-.}}
mkdir -p "$out_dir"
file="$out_dir/voiceplatform-$(date -u +%Y%m%dT%H%M%SZ).dump"

pg_dump --dbname="$DATABASE_URL" --format=custom --compress=6 --file="$file.partial"
# A dump that cannot be listed cannot be restored: fail now, not on the day it is needed.
pg_restore --list "$file.partial" >/dev/null
mv "$file.partial" "$file"
echo "$file"
