#!/usr/bin/env bash
# The one test command: installs, brings up PostgreSQL and Redis, runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/services.sh
exec .venv/bin/python -m pytest "$@"
