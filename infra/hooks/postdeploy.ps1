# azd postdeploy hook (Windows, PowerShell 7): the same steps as postdeploy.sh, read that file's
# header. tests/infra/test_infra_hooks.py keeps the two in step (same commands, flags and filter).
$ErrorActionPreference = 'Stop'

$FunctionName = 'eventgrid_lab_plan'
$SubscriptionName = 'labguard-lab-plan-writes'

function Say([string] $Text) { Write-Host "labguard: $Text" }
function Fail([string] $Text) { [Console]::Error.WriteLine("labguard: $Text"); exit 1 }

# The value from the environment, else from the azd environment, else empty.
function Setting([string] $Name) {
    $value = [Environment]::GetEnvironmentVariable($Name)
    if (-not $value) {
        $value = (azd env get-value $Name 2>$null)
        if ($LASTEXITCODE -ne 0) { $value = '' }
    }
    return "$value".Trim()
}

function Require([string] $Name) {
    $value = Setting $Name
    if (-not $value) { Fail "$Name is not set: run 'azd provision' first (it writes the outputs this hook reads)." }
    return $value
}

$AppRg = Require 'AZURE_RESOURCE_GROUP'
$AppName = Require 'AZURE_FUNCTION_APP_NAME'
$AppId = Require 'LABGUARD_FUNCTION_APP_ID'
$Topic = Require 'LABGUARD_SYSTEM_TOPIC'
$TopicRg = Require 'LABGUARD_SYSTEM_TOPIC_RESOURCE_GROUP'
$TopicCreated = Setting 'LABGUARD_SYSTEM_TOPIC_CREATED'
$DeadLetter = Require 'LABGUARD_DEAD_LETTER_CONTAINER_ID'
$Attempts = Setting 'LABGUARD_HOOK_ATTEMPTS'
$Wait = Setting 'LABGUARD_HOOK_WAIT_SECONDS'
if (-not $Attempts) { $Attempts = '30' }
if (-not $Wait) { $Wait = '10' }
if ("$Attempts$Wait" -notmatch '^[0-9]+$') { Fail 'LABGUARD_HOOK_ATTEMPTS and LABGUARD_HOOK_WAIT_SECONDS must be whole numbers.' }
$Attempts = [int] $Attempts
$Wait = [int] $Wait

# 1. The function must be listed on the app before Event Grid will validate the endpoint.
$attempt = 1
while ($true) {
    $listed = (az functionapp function show --resource-group $AppRg --name $AppName `
        --function-name $FunctionName --query name --output tsv 2>$null)
    if ($LASTEXITCODE -eq 0 -and $listed) {
        Say "$FunctionName is listed on $AppName."
        break
    }
    if ($attempt -ge $Attempts) {
        Fail "$FunctionName is still not listed on $AppName after $Attempts tries, ${Wait}s apart. The event subscription was not created (the timer sweep runs without it). Check the deployment in the portal (Function App > Deployment Center / Log stream), then run: azd hooks run postdeploy"
    }
    Say "$FunctionName is not listed on $AppName yet (try $attempt of $Attempts); waiting ${Wait}s."
    $attempt++
    Start-Sleep -Seconds $Wait
}

function State {
    $value = (az eventgrid system-topic event-subscription show --resource-group $TopicRg `
        --system-topic-name $Topic --name $SubscriptionName --query provisioningState --output tsv 2>$null)
    if ($LASTEXITCODE -ne 0) { return '' }
    return "$value".Trim()
}

# 2. A subscription whose validation failed stays Failed; delete it so the PUT starts clean.
function Repair {
    $current = State
    if ($current -in @('Failed', 'Canceled')) {
        Say "event subscription $SubscriptionName on $Topic is $current; deleting it to create it again."
        az eventgrid system-topic event-subscription delete --resource-group $TopicRg `
            --system-topic-name $Topic --name $SubscriptionName --yes
        if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    }
}

# Dead letters: the topic's own identity; see postdeploy.sh.
$deadLetterArgs = @('--deadletter-identity', 'systemassigned', '--deadletter-identity-endpoint', $DeadLetter)
if ($TopicCreated -ne 'true') {
    $principal = (az eventgrid system-topic show --resource-group $TopicRg --name $Topic `
        --query identity.principalId --output tsv 2>$null)
    if ($LASTEXITCODE -eq 0 -and $principal) {
        az role assignment create --assignee-object-id $principal --assignee-principal-type ServicePrincipal `
            --role 'Storage Blob Data Contributor' --scope $DeadLetter --output none
        if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    }
    else {
        Say "the existing topic $Topic has no system-assigned identity, so undeliverable events are dropped after 24 h instead of dead-lettered (the timer sweep still covers every plan). To keep them: az eventgrid system-topic update --resource-group $TopicRg --name $Topic --identity systemassigned, then run this hook again."
        $deadLetterArgs = @()
    }
}

# 3. Create or update (a PUT of the whole subscription), up to 3 tries, repairing a Failed one
# before each. The filter is exactly what shared/runtime/events.py accepts (HANDLED_EVENT_TYPES,
# HANDLED_OPERATIONS).
$try = 1
while ($true) {
    Repair
    Say "creating or updating event subscription $SubscriptionName on $Topic ($TopicRg)."
    az eventgrid system-topic event-subscription create --resource-group $TopicRg `
        --system-topic-name $Topic --name $SubscriptionName `
        --endpoint-type azurefunction --endpoint "$AppId/functions/$FunctionName" `
        --event-delivery-schema eventgridschema --max-events-per-batch 1 --preferred-batch-size-in-kilobytes 64 `
        --included-event-types Microsoft.Resources.ResourceWriteSuccess Microsoft.Resources.ResourceWriteFailure `
        --advanced-filter data.operationName StringIn Microsoft.LabServices/labPlans/write Microsoft.LabServices/labs/write `
        --max-delivery-attempts 10 --event-ttl 1440 `
        @deadLetterArgs --output none
    if ($LASTEXITCODE -eq 0) { break }
    if ($try -ge 3) {
        Fail "Event Grid refused event subscription $SubscriptionName 3 times (the az error is above). Run this hook again later (azd hooks run postdeploy): it deletes a subscription left in Failed and creates it anew."
    }
    Say "Event Grid refused the event subscription (try $try of 3); trying again in ${Wait}s."
    $try++
    Start-Sleep -Seconds $Wait
}

# 4. Prove it by reading it back.
$current = State
if ($current -ne 'Succeeded') {
    $shown = if ($current) { $current } else { 'missing' }
    Fail "event subscription $SubscriptionName on $Topic is '$shown' after the update. Run this hook again (azd hooks run postdeploy); if it stays so, see the topic's event subscriptions in the portal."
}
Say "event subscription $SubscriptionName delivers lab plan writes to $FunctionName."
