#!/bin/sh
# azd postdeploy hook: subscribe the eventgrid_lab_plan function to lab plan writes.
#
# Event Grid refuses a subscription to a function that is not deployed yet, and a failed
# validation can leave the subscription in the Failed state. So this hook
#   1. waits (bounded) until eventgrid_lab_plan is listed on the Function App,
#   2. deletes labguard's event subscription if it was left in Failed (or Canceled),
#   3. creates or updates it (a PUT: idempotent) with exactly the filter shared/runtime/events.py accepts,
#      up to 3 tries, repairing a Failed one before each,
#   4. reads it back and fails unless it is Succeeded.
# It changes no app setting and provisions nothing. infra/hooks/postdeploy.ps1 does the same on
# Windows; tests/infra/test_infra_hooks.py runs this file with stand-in az/azd commands.
#
# Inputs: the azd environment (provision outputs), read from the process environment that azd
# passes to hooks, or else with `azd env get-value`. LABGUARD_HOOK_ATTEMPTS (default 30) and
# LABGUARD_HOOK_WAIT_SECONDS (default 10) bound the wait.
set -eu

FUNCTION_NAME=eventgrid_lab_plan
SUBSCRIPTION_NAME=labguard-lab-plan-writes

say() { printf 'labguard: %s\n' "$*"; }
fail() { printf 'labguard: %s\n' "$*" >&2; exit 1; }

# setting NAME: the value from the environment, else from the azd environment, else empty.
setting() {
  eval "value=\${$1:-}"
  if [ -z "$value" ]; then
    value=$(azd env get-value "$1" 2>/dev/null) || value=""
  fi
  printf '%s' "$value"
}

require() {
  value=$(setting "$1")
  [ -n "$value" ] || fail "$1 is not set: run 'azd provision' first (it writes the outputs this hook reads)."
  printf '%s' "$value"
}

APP_RG=$(require AZURE_RESOURCE_GROUP)
APP_NAME=$(require AZURE_FUNCTION_APP_NAME)
APP_ID=$(require LABGUARD_FUNCTION_APP_ID)
TOPIC=$(require LABGUARD_SYSTEM_TOPIC)
TOPIC_RG=$(require LABGUARD_SYSTEM_TOPIC_RESOURCE_GROUP)
TOPIC_CREATED=$(setting LABGUARD_SYSTEM_TOPIC_CREATED)
DEAD_LETTER=$(require LABGUARD_DEAD_LETTER_CONTAINER_ID)
ATTEMPTS=$(setting LABGUARD_HOOK_ATTEMPTS)
WAIT=$(setting LABGUARD_HOOK_WAIT_SECONDS)
ATTEMPTS=${ATTEMPTS:-30}
WAIT=${WAIT:-10}
case "$ATTEMPTS$WAIT" in *[!0-9]*) fail "LABGUARD_HOOK_ATTEMPTS and LABGUARD_HOOK_WAIT_SECONDS must be whole numbers." ;; esac

# 1. The function must be listed on the app before Event Grid will validate the endpoint.
attempt=1
while :; do
  listed=$(az functionapp function show --resource-group "$APP_RG" --name "$APP_NAME" \
    --function-name "$FUNCTION_NAME" --query name --output tsv 2>/dev/null) || listed=""
  if [ -n "$listed" ]; then
    say "$FUNCTION_NAME is listed on $APP_NAME."
    break
  fi
  if [ "$attempt" -ge "$ATTEMPTS" ]; then
    fail "$FUNCTION_NAME is still not listed on $APP_NAME after $ATTEMPTS tries, ${WAIT}s apart. The event subscription was not created (the timer sweep runs without it). Check the deployment in the portal (Function App > Deployment Center / Log stream), then run: azd hooks run postdeploy"
  fi
  say "$FUNCTION_NAME is not listed on $APP_NAME yet (try $attempt of $ATTEMPTS); waiting ${WAIT}s."
  attempt=$((attempt + 1))
  sleep "$WAIT"
done

state() {
  az eventgrid system-topic event-subscription show --resource-group "$TOPIC_RG" \
    --system-topic-name "$TOPIC" --name "$SUBSCRIPTION_NAME" --query provisioningState --output tsv 2>/dev/null || true
}

# 2. A subscription whose validation failed stays Failed; delete it so the PUT starts clean.
repair() {
  current=$(state)
  case "$current" in
    Failed | Canceled)
      say "event subscription $SUBSCRIPTION_NAME on $TOPIC is $current; deleting it to create it again."
      az eventgrid system-topic event-subscription delete --resource-group "$TOPIC_RG" \
        --system-topic-name "$TOPIC" --name "$SUBSCRIPTION_NAME" --yes
      ;;
  esac
}

# Dead letters go to labguard's container with the topic's own identity (the storage account has no
# keys). A topic labguard created has that identity and its role from the template; an existing
# topic gets the role here if it has a system identity, and no dead-lettering if it has none.
set -- --deadletter-identity systemassigned --deadletter-identity-endpoint "$DEAD_LETTER"
if [ "$TOPIC_CREATED" != "true" ]; then
  principal=$(az eventgrid system-topic show --resource-group "$TOPIC_RG" --name "$TOPIC" \
    --query identity.principalId --output tsv 2>/dev/null) || principal=""
  if [ -n "$principal" ]; then
    az role assignment create --assignee-object-id "$principal" --assignee-principal-type ServicePrincipal \
      --role "Storage Blob Data Contributor" --scope "$DEAD_LETTER" --output none
  else
    say "the existing topic $TOPIC has no system-assigned identity, so undeliverable events are dropped after 24 h instead of dead-lettered (the timer sweep still covers every plan). To keep them: az eventgrid system-topic update --resource-group $TOPIC_RG --name $TOPIC --identity systemassigned, then run this hook again."
    set --
  fi
fi

# 3. Create or update: `create` is a PUT of the whole subscription, so running it again converges.
# The filter is exactly what shared/runtime/events.py accepts (HANDLED_EVENT_TYPES, HANDLED_OPERATIONS).
# Event Grid validates the endpoint now; a refusal leaves the subscription Failed, so each retry
# repairs it first.
try=1
while :; do
  repair
  say "creating or updating event subscription $SUBSCRIPTION_NAME on $TOPIC ($TOPIC_RG)."
  if az eventgrid system-topic event-subscription create --resource-group "$TOPIC_RG" \
    --system-topic-name "$TOPIC" --name "$SUBSCRIPTION_NAME" \
    --endpoint-type azurefunction --endpoint "$APP_ID/functions/$FUNCTION_NAME" \
    --event-delivery-schema eventgridschema --max-events-per-batch 1 --preferred-batch-size-in-kilobytes 64 \
    --included-event-types Microsoft.Resources.ResourceWriteSuccess Microsoft.Resources.ResourceWriteFailure \
    --advanced-filter data.operationName StringIn Microsoft.LabServices/labPlans/write Microsoft.LabServices/labs/write \
    --max-delivery-attempts 10 --event-ttl 1440 \
    "$@" --output none; then
    break
  fi
  if [ "$try" -ge 3 ]; then
    fail "Event Grid refused event subscription $SUBSCRIPTION_NAME 3 times (the az error is above). Run this hook again later (azd hooks run postdeploy): it deletes a subscription left in Failed and creates it anew."
  fi
  say "Event Grid refused the event subscription (try $try of 3); trying again in ${WAIT}s."
  try=$((try + 1))
  sleep "$WAIT"
done

# 4. Prove it by reading it back.
current=$(state)
[ "$current" = "Succeeded" ] || fail "event subscription $SUBSCRIPTION_NAME on $TOPIC is '${current:-missing}' after the update. Run this hook again (azd hooks run postdeploy); if it stays so, see the topic's event subscriptions in the portal."
say "event subscription $SUBSCRIPTION_NAME delivers lab plan writes to $FUNCTION_NAME."
