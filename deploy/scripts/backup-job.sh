#!/usr/bin/env bash
# The daily backup (the Kubernetes CronJob voice-backup, compose's backup service): a
# dump with backup-postgres.sh, stored in object storage (manage.py backups push: under
# backups/ in BACKUP_BUCKET, else BACKUP_DIR), then dumps older than
# BACKUP_RETENTION_DAYS (30) deleted (the newest is always kept). Run from the app's
# directory (/app in the images), with the app's settings and DATABASE_URL(_FILE).
set -euo pipefail

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dump=$("$(dirname "$0")/backup-postgres.sh" "$work")
python manage.py backups push "$dump" "${dump%.dump}.counts"
python manage.py backups prune
