#!/bin/sh
# azd postdeploy hook: once the code (and so the eventgrid_lab_plan function) exists, create the
# Event Grid subscription by provisioning again with LABGUARD_EVENT_SUBSCRIPTION=true.
set -eu
if [ "${LABGUARD_EVENT_SUBSCRIPTION:-false}" = "true" ]; then
  echo "labguard: Event Grid subscription already enabled."
  exit 0
fi
echo "labguard: code deployed; creating the Event Grid subscription to eventgrid_lab_plan."
azd env set LABGUARD_EVENT_SUBSCRIPTION true
azd provision --no-prompt
