#!/usr/bin/env bash
# The restore drill (deploy/RUNBOOK.md): the newest dump in the backups storage restored
# into a scratch database made for it, its row counts compared with those taken when
# the dump was made, then the scratch database dropped. Exit 0 when they match.
#
#   DATABASE_URL=postgres://user:password@host:5432/voice deploy/scripts/restore-drill.sh
#
# The scratch database (voice_drill_<random>) is made on the server of DATABASE_URL (or
# DRILL_SERVER_URL, a URL of any database on the server to use); the role needs CREATEDB.
# Run from the app's directory, with the app's settings (it reads the storage).
set -euo pipefail

if [ -n "${DATABASE_URL_FILE:-}" ]; then
  DATABASE_URL=$(<"$DATABASE_URL_FILE")
fi
server=${DRILL_SERVER_URL:-${DATABASE_URL:?set DATABASE_URL (or DRILL_SERVER_URL)}}
here=$(cd "$(dirname "$0")" && pwd)

work=$(mktemp -d)
scratch="voice_drill_$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
# The same server and credentials, another database name (any query string kept).
base=${server%%\?*}
query=${server#"$base"}
scratch_url="${base%/*}/$scratch$query"
cleanup() {
  psql "$server" -XAtqc "DROP DATABASE IF EXISTS \"$scratch\" WITH (FORCE)" >/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

dump=$(python manage.py backups fetch-newest "$work")
expected="${dump%.dump}.counts"
[ -r "$expected" ] || { echo "no row counts stored beside $(basename "$dump")" >&2; exit 1; }

psql "$server" -XAtqc "CREATE DATABASE \"$scratch\"" >/dev/null
restored=$(TARGET_DATABASE_URL="$scratch_url" "$here/restore-postgres.sh" "$dump")

if [ "$restored" != "$(cat "$expected")" ]; then
  echo "drill FAILED for $(basename "$dump"): row counts differ" >&2
  diff <(cat "$expected") <(echo "$restored") >&2 || true
  exit 1
fi
echo "drill passed: $(basename "$dump") restored into $scratch (dropped), row counts match:"
echo "$restored"
