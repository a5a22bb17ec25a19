#!/usr/bin/env bash
# Deploys an overlay with kubectl's current context: migrations first, then the rollout.
#
#   deploy/scripts/k8s-deploy.sh production      # or staging
#
# 1. the objects labelled voiceplatform.io/stage=prepare (namespace, identities, config,
#    network policies, the migration Job), after deleting the last Job (a Job's pod
#    template cannot change);
# 2. waits for the migrations to complete;
# 3. everything, and waits for each Deployment's rollout;
# 4. where the weekday schedule runs, sets the web minimum the schedule says for now
#    (applying the HPA put it back to its manifest's value).
set -euo pipefail

overlay=${1:?usage: k8s-deploy.sh staging|production}
dir="$(cd "$(dirname "$0")/../k8s/overlays/$overlay" && pwd)"
# The main namespace (the other one, the worker's, is "$ns-sandbox").
ns=$(kubectl kustomize "$dir" | awk '/^kind: Namespace$/ {found = 1; next}
  found && /^  name: / {found = 0; if ($2 !~ /-sandbox$/) {print $2; exit}}')

# The worker runs in "$ns-sandbox" (its own Pod Security level): the Secret is needed there too.
for namespace in "$ns" "$ns-sandbox"; do
  if ! kubectl get namespace "$namespace" >/dev/null 2>&1 || ! kubectl -n "$namespace" get secret voice-secrets >/dev/null 2>&1; then
    echo "Create namespace $namespace and its Secret voice-secrets first (deploy/k8s/base/secret.example.yaml)." >&2
    exit 1
  fi
done

kubectl -n "$ns" delete job voice-migrate --ignore-not-found
kubectl apply -k "$dir" -l voiceplatform.io/stage=prepare
if ! kubectl -n "$ns" wait --for=condition=complete job/voice-migrate --timeout=900s; then
  kubectl -n "$ns" logs job/voice-migrate --tail=50 >&2 || true
  echo "migrations did not complete: nothing else was rolled out" >&2
  exit 1
fi

kubectl apply -k "$dir"
for deployment in voice-server voice-beat; do
  kubectl -n "$ns" rollout status "deployment/$deployment" --timeout=30m
done
kubectl -n "$ns-sandbox" rollout status deployment/voice-worker --timeout=30m

# The seed's schedule (5.4) as of now, in the CronJobs' time zone.
zone=$(kubectl -n "$ns" get cronjob voice-floor-weekday-peak -o jsonpath='{.spec.timeZone}' 2>/dev/null || true)
if [ -n "$zone" ]; then
  day=$(TZ="$zone" date +%u)
  hour=$((10#$(TZ="$zone" date +%H)))
  floor=3
  if [ "$day" -le 5 ]; then
    if [ "$hour" -ge 22 ]; then floor=3
    elif [ "$hour" -ge 18 ]; then floor=4
    elif [ "$hour" -ge 10 ]; then floor=8
    elif [ "$hour" -ge 8 ]; then floor=5
    fi
  fi
  kubectl -n "$ns" patch horizontalpodautoscaler voice-server-hpa --type=merge \
    --patch "{\"spec\": {\"minReplicas\": $floor}}"
fi
echo "deployed $overlay to $ns"
