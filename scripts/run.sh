#!/usr/bin/env bash
# The one run command: installs, migrates, serves on $PORT (8000) with daphne. With
# REDIS_URL set it also runs a Celery worker with the beat schedule (tools, exports,
# the expiry sweep), unless RUN_WORKER=0 (when workers run elsewhere); without Redis
# the server runs tasks and the schedule in-process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python manage.py migrate --noinput -v 0
var_dir=${VAR_DIR:-var}
mkdir -p "$var_dir"
pids=()
# Workspaces are size-capped mounts (tools_app/mounts.py): root may mount them; anyone
# else may in a user and mount namespace of their own, where the host allows one.
own_mounts=()
if [ "$(id -u)" -ne 0 ] && unshare --user --map-current-user --keep-caps --mount true 2>/dev/null; then
  own_mounts=(unshare --user --map-current-user --keep-caps --mount --propagation private --)
fi
# Stops what it started: each child asked to stop (SIGTERM: daphne drains, Celery
# finishes its running tasks), then waited for, at most RUN_STOP_SECONDS (30): one
# still up then is killed, and says so (a stop asked for must end the command).
stop() {
  trap - TERM INT EXIT
  kill "${pids[@]}" 2>/dev/null || true
  local limit=${RUN_STOP_SECONDS:-30}
  local deadline=$((SECONDS + limit))
  for pid in "${pids[@]}"; do
    while running "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if running "$pid"; then
      echo "run.sh: process $pid did not stop within $limit s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
}
# Alive, not a zombie waiting to be reaped.
running() {
  [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* (.*) Z ' "/proc/$1/stat" 2>/dev/null
}
# Ctrl-C or a SIGTERM asked for the stop: once the children are down, that is success.
trap 'stop; exit 0' TERM INT
trap stop EXIT
if [ -n "${REDIS_URL:-}" ] && [ "${RUN_WORKER:-1}" = 1 ]; then
  # With WORKER_METRICS_PORT set, the worker serves what its pool processes observe.
  # Without -Q it consumes every queue in CELERY_TASK_QUEUES: tasks, and the tool calls'
  # fast and slow queues, taken in turn (CELERY_WORKER_CONCURRENCY processes).
  metrics_dir="$var_dir/worker-metrics"
  rm -rf "$metrics_dir" && mkdir -p "$metrics_dir"
  PROMETHEUS_MULTIPROC_DIR="$metrics_dir" \
    "${own_mounts[@]}" .venv/bin/celery -A voiceplatform worker --beat --schedule "$var_dir/celerybeat-schedule" \
    --loglevel warning --hostname "run-$$@%h" &
  pids+=($!)
fi
"${own_mounts[@]}" .venv/bin/daphne -b "${HOST:-127.0.0.1}" -p "${PORT:-8000}" voiceplatform.asgi:application &
pids+=($!)
# Whichever stops first stops the others, and its status is the command's (a signal
# to this script is a requested stop: 0).
status=0
wait -n || status=$?
stop
exit "$status"
