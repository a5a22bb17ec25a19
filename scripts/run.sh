#!/usr/bin/env bash
# The one run command: installs, migrates, serves on $PORT (8000) with daphne.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python manage.py migrate --noinput -v 0
exec .venv/bin/daphne -b "${HOST:-127.0.0.1}" -p "${PORT:-8000}" voiceplatform.asgi:application
