# azd postdeploy hook (Windows): see postdeploy.sh.
$ErrorActionPreference = 'Stop'
if ($env:LABGUARD_EVENT_SUBSCRIPTION -eq 'true') {
    Write-Host 'labguard: Event Grid subscription already enabled.'
    exit 0
}
Write-Host 'labguard: code deployed; creating the Event Grid subscription to eventgrid_lab_plan.'
azd env set LABGUARD_EVENT_SUBSCRIPTION true
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
azd provision --no-prompt
exit $LASTEXITCODE
