#!/usr/bin/env bash
# Region failover (seed 9.2 scenario 4, 9.3): moves service to the secondary region.
#
#   PRIMARY_CONTEXT=prod-us-east-1 SECONDARY_CONTEXT=prod-us-west-2 \
#   PUBLIC_URL=https://voice.example.com \
#   PROMOTE_DATABASE_CMD='aws rds promote-read-replica --db-instance-identifier voice-db-replica --region us-west-2' \
#   SWITCH_DNS_CMD='aws route53 change-resource-record-sets --hosted-zone-id Z123 --change-batch file://dns-failover.json' \
#   NEW_DATABASE_URL_FILE=./secondary-database-url \
#     deploy/scripts/failover-region.sh
#
# The database promotion and the DNS switch are the provider's commands, given as
# PROMOTE_DATABASE_CMD and SWITCH_DNS_CMD (a step left unset is skipped and said so).
# NAMESPACE defaults to voice-production; SCALE_MIN (the secondary's web minimum while it
# carries everything) to 10.
set -euo pipefail

: "${SECONDARY_CONTEXT:?set SECONDARY_CONTEXT (kubectl context of the secondary region)}"
: "${PUBLIC_URL:?set PUBLIC_URL, e.g. https://voice.example.com}"
ns=${NAMESPACE:-voice-production}
scale_min=${SCALE_MIN:-10}
secondary=(kubectl --context="$SECONDARY_CONTEXT" -n "$ns")

echo "=== 1. secondary region health"
kubectl --context="$SECONDARY_CONTEXT" get nodes
"${secondary[@]}" get deployments

echo "=== 2. primary: stop new sessions if it still answers"
if [ -n "${PRIMARY_CONTEXT:-}" ]; then
  kubectl --context="$PRIMARY_CONTEXT" -n "$ns" exec deployment/voice-server -- \
    python manage.py maintenance on --message "Moving to another region" --eta "30 minutes" \
    || echo "primary unreachable: going on"
fi

echo "=== 3. promote the secondary database"
if [ -n "${PROMOTE_DATABASE_CMD:-}" ]; then
  bash -c "$PROMOTE_DATABASE_CMD"
else
  echo "PROMOTE_DATABASE_CMD unset: skipped (promote the replica by hand now)"
fi

echo "=== 4. point the secondary at it"
if [ -n "${NEW_DATABASE_URL_FILE:-}" ]; then
  KUBE_CONTEXT="$SECONDARY_CONTEXT" "$(dirname "$0")/rotate-secret.sh" "$ns" database-url "$NEW_DATABASE_URL_FILE"
else
  echo "NEW_DATABASE_URL_FILE unset: the secondary keeps its DATABASE_URL"
fi

echo "=== 5. scale the secondary up"
"${secondary[@]}" patch horizontalpodautoscaler voice-server-hpa --type=merge \
  --patch "{\"spec\": {\"minReplicas\": $scale_min}}"
"${secondary[@]}" rollout status deployment/voice-server --timeout=15m

echo "=== 6. switch DNS"
if [ -n "${SWITCH_DNS_CMD:-}" ]; then
  bash -c "$SWITCH_DNS_CMD"
else
  echo "SWITCH_DNS_CMD unset: skipped (switch DNS by hand now)"
fi

echo "=== 7. verify"
for attempt in $(seq 1 30); do
  if curl -fsS --max-time 5 "$PUBLIC_URL/health/ready" >/dev/null; then
    echo "service is ready at $PUBLIC_URL"
    "${secondary[@]}" exec deployment/voice-server -- python manage.py maintenance off || true
    echo "=== failover complete"
    exit 0
  fi
  echo "waiting for $PUBLIC_URL ($attempt/30)"
  sleep 10
done
echo "$PUBLIC_URL did not become ready" >&2
exit 1
