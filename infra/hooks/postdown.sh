#!/bin/sh
# azd postdown hook, after `azd down` deleted labguard's resource group.
#   1. The Key Vault is only soft-deleted and, with purge protection, keeps its name for 90 days:
#      a new LABGUARD_KEY_VAULT_SUFFIX gives the next `azd up` a new vault name.
#   2. On a system topic labguard did not create, the resource group's deletion left labguard's
#      event subscription behind: delete that subscription (never the topic).
# infra/hooks/postdown.ps1 does the same on Windows.
set -eu

say() { printf 'labguard: %s\n' "$*"; }

setting() {
  eval "value=\${$1:-}"
  if [ -z "$value" ]; then
    value=$(azd env get-value "$1" 2>/dev/null) || value=""
  fi
  printf '%s' "$value"
}

suffix=$(date -u +%Y%m%d%H%M%S)
azd env set LABGUARD_KEY_VAULT_SUFFIX "$suffix"
say "the next 'azd up' creates a new Key Vault (LABGUARD_KEY_VAULT_SUFFIX=$suffix); the deleted one stays recoverable for 90 days."

TOPIC=$(setting LABGUARD_SYSTEM_TOPIC)
TOPIC_RG=$(setting LABGUARD_SYSTEM_TOPIC_RESOURCE_GROUP)
if [ "$(setting LABGUARD_SYSTEM_TOPIC_CREATED)" != "true" ] && [ -n "$TOPIC" ] && [ -n "$TOPIC_RG" ]; then
  if az eventgrid system-topic event-subscription delete --resource-group "$TOPIC_RG" \
    --system-topic-name "$TOPIC" --name labguard-lab-plan-writes --yes; then
    say "deleted event subscription labguard-lab-plan-writes from $TOPIC (the topic itself is not labguard's and stays)."
  else
    say "could not delete event subscription labguard-lab-plan-writes from $TOPIC ($TOPIC_RG); delete it by hand."
  fi
fi
