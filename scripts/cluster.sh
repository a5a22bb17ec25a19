#!/usr/bin/env bash
# Scale-out on one machine, without containers: nginx (deploy/nginx/nginx.conf rendered
# for loopback by scripts/render_nginx.py) on $CLUSTER_PORT (8080) in front of two web
# processes (POD_NAME web-1, web-2), two Celery workers each with a workspace root of
# its own (pod-local, as in Kubernetes) and one beat, all on DATABASE_URL and REDIS_URL
# (default: the local PostgreSQL and Redis). Everything it writes is under
# $CLUSTER_DIR (var/cluster); Ctrl-C stops it all. Needs nginx (scripts/services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
command -v nginx >/dev/null || { echo "cluster.sh: nginx is not installed" >&2; exit 1; }

export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/voiceplatform}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
export SESSION_AFFINITY_COOKIE=app  # nginx routes on the app's cookie, as in compose
port=${CLUSTER_PORT:-8080}
web_ports=("${CLUSTER_WEB1_PORT:-8001}" "${CLUSTER_WEB2_PORT:-8002}")
dir=$(realpath -m "${CLUSTER_DIR:-var/cluster}")
mkdir -p "$dir/nginx"
.venv/bin/python manage.py migrate --noinput -v 0

# Workspaces are size-capped mounts: root may mount them, anyone else in a user and
# mount namespace of their own where the host allows one (as scripts/run.sh does).
own_mounts=()
if [ "$(id -u)" -ne 0 ] && unshare --user --map-current-user --keep-caps --mount true 2>/dev/null; then
  own_mounts=(unshare --user --map-current-user --keep-caps --mount --propagation private --)
fi

pids=()
stop() {
  trap - TERM INT EXIT
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop TERM INT EXIT

for i in 1 2; do
  name="web-$i"
  mkdir -p "$dir/$name"
  POD_NAME=$name VAR_DIR="$dir/$name" \
    "${own_mounts[@]}" .venv/bin/daphne -b 127.0.0.1 -p "${web_ports[$((i - 1))]}" \
    voiceplatform.asgi:application >"$dir/$name.log" 2>&1 &
  pids+=($!)
done
for i in 1 2; do
  name="worker-$i"
  mkdir -p "$dir/$name/workspaces"
  POD_NAME=$name VAR_DIR="$dir/$name" TOOL_WORKSPACE_ROOT="$dir/$name/workspaces" \
    "${own_mounts[@]}" .venv/bin/celery -A voiceplatform worker --hostname "$name@%h" \
    --loglevel info >"$dir/$name.log" 2>&1 &
  pids+=($!)
done
.venv/bin/celery -A voiceplatform beat --schedule "$dir/celerybeat-schedule" \
  --loglevel info >"$dir/beat.log" 2>&1 &
pids+=($!)

.venv/bin/python scripts/render_nginx.py --listen "$port" --prefix "$dir/nginx" \
  --upstream "web-1=${web_ports[0]}" --upstream "web-2=${web_ports[1]}" >"$dir/nginx/nginx.conf"
nginx -p "$dir/nginx" -c nginx.conf -e error.log -g 'daemon off;' &
pids+=($!)

echo "cluster: http://127.0.0.1:$port (nginx) -> web-1 :${web_ports[0]}, web-2 :${web_ports[1]};" \
  "workers worker-1, worker-2; beat. Logs in $dir; Ctrl-C stops it all."
# Whichever stops first (or a signal to this script) stops the others.
wait -n
