#!/usr/bin/env bash
# Replaces one key of the Secret voice-secrets and restarts the pods that read it (the
# app reads its settings at start), waiting for each rollout.
#
#   deploy/scripts/rotate-secret.sh NAMESPACE KEY FILE
#
# KEY is one of the Secret's keys (secret-key, database-url, redis-url, openai-api-key,
# openai-webhook-secret, ...); FILE holds the new value (a file, so that it never shows
# in the shell history or the process list). deploy/RUNBOOK.md, "Secret rotation", has
# the order for the OpenAI key and the webhook secret's overlap. KUBE_CONTEXT picks a
# kubectl context other than the current one. The worker runs in NAMESPACE-sandbox
# (deploy/README.md, "Namespaces"), with its own copy of the Secret: both are patched.
set -euo pipefail

ns=${1:?usage: rotate-secret.sh NAMESPACE KEY FILE}
key=${2:?usage: rotate-secret.sh NAMESPACE KEY FILE}
file=${3:?usage: rotate-secret.sh NAMESPACE KEY FILE}
[ -r "$file" ] || { echo "cannot read $file" >&2; exit 1; }

# A trailing newline is not part of a secret (the app strips it from *_FILE too).
value=$(printf '%s' "$(<"$file")" | base64 | tr -d '\n')
kubectl=(kubectl ${KUBE_CONTEXT:+--context="$KUBE_CONTEXT"})
for namespace in "$ns" "$ns-sandbox"; do
  "${kubectl[@]}" -n "$namespace" patch secret voice-secrets --type=merge \
    --patch "{\"data\": {\"$key\": \"$value\"}}"
done

"${kubectl[@]}" -n "$ns" rollout restart deployment/voice-server deployment/voice-beat
"${kubectl[@]}" -n "$ns-sandbox" rollout restart deployment/voice-worker
for deployment in voice-server voice-beat; do
  "${kubectl[@]}" -n "$ns" rollout status "deployment/$deployment" --timeout=30m
done
"${kubectl[@]}" -n "$ns-sandbox" rollout status deployment/voice-worker --timeout=30m
echo "rotated $key in $ns and $ns-sandbox"
