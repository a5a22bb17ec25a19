#!/usr/bin/env bash
# PostgreSQL backup (seed 9.1): one pg_dump of the database in custom format
# (compressed, restorable whole or table by table), checked by reading back its table of
# contents before it is given its final name. Prints the dump's path. Beside it,
# <dump>.counts: the row counts of the tables that matter, taken in the very snapshot
# the dump reads, which the restore drill (restore-drill.sh) compares after restoring.
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
stem="$out_dir/voiceplatform-$(date -u +%Y%m%dT%H%M%SZ)"
file="$stem.dump"

# One psql session holds a snapshot open; the counts and pg_dump both read it.
coproc SNAPSHOT { psql "$DATABASE_URL" -XAtq -v ON_ERROR_STOP=1 -F ' '; }
# Bash unsets SNAPSHOT_PID as soon as the coprocess is reaped: keep our own copy to wait on.
# shellcheck disable=SC2153  # set by coproc above, which shellcheck does not follow
snapshot_pid=$SNAPSHOT_PID
echo "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot();" >&"${SNAPSHOT[1]}"
read -r snapshot <&"${SNAPSHOT[0]}"
grep -v '^--' "$(dirname "$0")/row-counts.sql" >&"${SNAPSHOT[1]}"
: >"$file.counts.partial"
for _ in 1 2 3 4; do
  read -r line <&"${SNAPSHOT[0]}"
  echo "$line" >>"$file.counts.partial"
done
pg_dump --dbname="$DATABASE_URL" --snapshot="$snapshot" --format=custom --compress=6 \
  --file="$file.partial"
printf 'COMMIT;\n\\q\n' >&"${SNAPSHOT[1]}"
wait "$snapshot_pid"
# A dump that cannot be listed cannot be restored: fail now, not on the day it is needed.
pg_restore --list "$file.partial" >/dev/null
mv "$file.counts.partial" "$stem.counts"
mv "$file.partial" "$file"
echo "$file"
