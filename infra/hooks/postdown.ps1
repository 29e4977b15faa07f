# azd postdown hook (Windows, PowerShell 7): the same steps as postdown.sh, read that file's header.
$ErrorActionPreference = 'Stop'

function Say([string] $Text) { Write-Host "labguard: $Text" }

function Setting([string] $Name) {
    $value = [Environment]::GetEnvironmentVariable($Name)
    if (-not $value) {
        $value = (azd env get-value $Name 2>$null)
        if ($LASTEXITCODE -ne 0) { $value = '' }
    }
    return "$value".Trim()
}

$suffix = [DateTime]::UtcNow.ToString('yyyyMMddHHmmss')
azd env set LABGUARD_KEY_VAULT_SUFFIX $suffix
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
Say "the next 'azd up' creates a new Key Vault (LABGUARD_KEY_VAULT_SUFFIX=$suffix); the deleted one stays recoverable for 90 days."

$Topic = Setting 'LABGUARD_SYSTEM_TOPIC'
$TopicRg = Setting 'LABGUARD_SYSTEM_TOPIC_RESOURCE_GROUP'
if ((Setting 'LABGUARD_SYSTEM_TOPIC_CREATED') -ne 'true' -and $Topic -and $TopicRg) {
    az eventgrid system-topic event-subscription delete --resource-group $TopicRg `
        --system-topic-name $Topic --name labguard-lab-plan-writes --yes
    if ($LASTEXITCODE -eq 0) {
        Say "deleted event subscription labguard-lab-plan-writes from $Topic (the topic itself is not labguard's and stays)."
    }
    else {
        Say "could not delete event subscription labguard-lab-plan-writes from $Topic ($TopicRg); delete it by hand."
    }
}
