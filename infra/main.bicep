// labguard: everything `azd up` deploys. Subscription scope: creates the resource group, the
// resources in it (modules/), the custom role, and the role assignments of the Function App's
// identity on every subscription or resource group labguard watches. Deploy guide: infra/README.md.
targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------
// Where and how
// ---------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(40)
@description('azd environment name: names the resource group and tags every resource.')
param environmentName string

@minLength(1)
@description('Region of the resource group and its resources (pick one that offers Flex Consumption; see infra/README.md).')
param location string

@description('Resource group to create; empty: rg-ENVIRONMENTNAME.')
param resourceGroupName string = ''

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
@description('Replication of the storage account (host state, notice ledger, dead letters). LRS is enough: all of it can be rebuilt.')
param storageSku string = 'Standard_LRS'

@description('Name of the subscription\'s existing Event Grid system topic (topic type Microsoft.Resources.Subscriptions), if it has one: Azure allows one per subscription. Empty: labguard creates one. Find it with the query in infra/README.md.')
param existingSystemTopicName string = ''

@description('Resource group of that existing system topic (required with existingSystemTopicName).')
param existingSystemTopicResourceGroup string = ''

@description('Changes the Key Vault name. The postdown hook sets a new value after `azd down`, because the deleted vault keeps its name for 90 days (purge protection). See infra/README.md.')
param keyVaultSuffix string = ''

// ---------------------------------------------------------------------------------------------
// What labguard watches (and so where its identity gets access)
// ---------------------------------------------------------------------------------------------

@description('Comma-separated subscription ids whose lab plans labguard reads and patches; empty: this subscription. The deploying account needs Owner or User Access Administrator on each.')
param labPlanSubscriptionIds string = ''

@description('Comma-separated resource group ids (/subscriptions/ID/resourceGroups/NAME) to narrow access to; when set, labPlanSubscriptionIds is ignored and lab plan access is granted on these groups only.')
param labPlanResourceGroupIds string = ''

// ---------------------------------------------------------------------------------------------
// labguard settings (see shared/runtime/settings.py KNOWN_SETTINGS; empty means the code's default)
// ---------------------------------------------------------------------------------------------

@allowed([
  ''
  'audit'
  'enforce'
])
@description('LABGUARD_MODE: empty (default) = the policy file\'s mode (audit when it sets none); audit or enforce override the file.')
param labguardMode string = ''

@description('LABGUARD_POLICY_FILE; empty: policy.yaml beside function_app.py.')
param policyFile string = ''

@description('LABGUARD_ARM_ENDPOINT; empty: the Resource Manager endpoint of the cloud this is deployed to.')
param armEndpoint string = ''

@description('LABGUARD_ARM_AUDIENCE: token audience for ARM; empty: the ARM endpoint (right for the public cloud).')
param armAudience string = ''

@description('LABGUARD_CA_BUNDLE: path of a PEM file of extra CAs inside the app package; empty: none.')
param caBundle string = ''

@description('LABGUARD_SCHEDULE: NCRONTAB schedule of the sweep (UTC). Must be set: the timer binding reads %LABGUARD_SCHEDULE%.')
param schedule string = '0 */15 * * * *'

@description('LABGUARD_CONCURRENCY: plans read or patched at once (1-256); empty: 16.')
param concurrency string = ''

@description('LABGUARD_LABS: on (default) holds labs to the policy too; off: lab plans only.')
@allowed(['on', 'off'])
param labs string = 'on'

@description('LABGUARD_SWEEP_FANOUT: auto (a queue message per subscription from 10 scopes up), on or off; empty: auto.')
@allowed([
  ''
  'auto'
  'on'
  'off'
])
param sweepFanout string = ''

@description('LABGUARD_LIST_CONCURRENCY: scopes a sweep lists at once (1-64); empty: 4.')
param listConcurrency string = ''

@description('LABGUARD_NOTICE_WAIT_SECONDS: how long one trigger waits for a failure notice (1-25); empty: 5.')
param noticeWaitSeconds string = ''

@description('LABGUARD_SMTP_HOST; empty: no email notices.')
param smtpHost string = ''

@description('LABGUARD_SMTP_PORT; empty: 587 (STARTTLS).')
param smtpPort string = ''

@description('LABGUARD_SMTP_USERNAME; empty: no SMTP login.')
param smtpUsername string = ''

@secure()
@description('LABGUARD_SMTP_PASSWORD: stored in Key Vault, referenced from the app setting.')
param smtpPassword string = ''

@description('LABGUARD_MAIL_FROM: sender address of notices.')
param mailFrom string = ''

@description('LABGUARD_FALLBACK_EMAIL: where notices go when a plan has no valid support email.')
param fallbackEmail string = ''

@description('LABGUARD_EVENTGRID_TOPIC_ENDPOINT: custom topic for notices; empty: none.')
param eventGridTopicEndpoint string = ''

@secure()
@description('LABGUARD_EVENTGRID_TOPIC_KEY: stored in Key Vault, referenced from the app setting.')
param eventGridTopicKey string = ''

@secure()
@description('LABGUARD_WEBHOOK_URLS: comma-separated incoming-webhook URLs; they carry tokens, so they are stored in Key Vault.')
param webhookUrls string = ''

@description('LABGUARD_REPORT_CONTAINER: blob container the compliance page is written to after each sweep (created on first use; the app identity has Storage Blob Data Owner on the account); empty: no page.')
param reportContainer string = 'labguard-reports'

@description('LABGUARD_DIGEST_EMAIL: admin address for the daily digest (needs the SMTP settings); empty: no digest.')
param digestEmail string = ''

@description('LABGUARD_NOTIFY_CHANGER: on mails the person whose change to a plan or lab enforce set back (needs the SMTP settings and LABGUARD_EXEMPTION_CONTACT); off (default): nobody is mailed.')
@allowed(['on', 'off'])
param notifyChanger string = 'off'

@description('LABGUARD_EXEMPTION_CONTACT: where people ask for an exemption (one mail address or an https URL), named in those mails.')
param exemptionContact string = ''

@description('LABGUARD_SUPPORT_URL_HOSTS: comma-separated host names whose supportInfo.url may receive notices; empty: none.')
param supportUrlHosts string = ''

@description('LABGUARD_LEDGER_TABLE: table of the notice ledger, created in the app\'s storage account.')
param ledgerTableName string = 'labguardnotices'

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  app: 'labguard'
}
var rgName = empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
var functionAppName = 'func-labguard-${resourceToken}'
var deploymentContainerName = 'app-package-${resourceToken}'
var deadLetterContainerName = 'eventgrid-deadletter'
// Unique per environment and per deployment generation (keyVaultSuffix): `azd down` leaves the
// vault soft-deleted with purge protection, and its name taken, for 90 days.
var keyVaultName = 'kv-lg-${uniqueString(subscription().id, environmentName, location, keyVaultSuffix)}'
var useExistingSystemTopic = !empty(existingSystemTopicName)
var systemTopicName = useExistingSystemTopic ? existingSystemTopicName : 'evgt-labguard-${resourceToken}'

// ---------------------------------------------------------------------------------------------
// Scope: which subscriptions and resource groups
// ---------------------------------------------------------------------------------------------

// For-expressions rather than lambdas: checkov's Bicep parser (pycep 0.5.1) cannot read lambdas.
// Write the lists without spaces or trailing commas, e.g. "ID1,ID2".
var scopeResourceGroupIds = empty(labPlanResourceGroupIds) ? [] : split(labPlanResourceGroupIds, ',')
var resourceGroupMode = !empty(scopeResourceGroupIds)
var listedSubscriptions = empty(labPlanSubscriptionIds) ? [] : split(toLower(labPlanSubscriptionIds), ',')
var resourceGroupSubscriptionsListed = [for id in scopeResourceGroupIds: toLower(split(id, '/')[2])]
var resourceGroupSubscriptions = union(resourceGroupSubscriptionsListed, [])
var subscriptionModeSubscriptions = empty(listedSubscriptions) ? [subscription().subscriptionId] : union(listedSubscriptions, [])
var watchedSubscriptions = resourceGroupMode ? resourceGroupSubscriptions : subscriptionModeSubscriptions
var watchedResourceGroupNames = [for id in scopeResourceGroupIds: toLower(split(id, '/')[4])]
var watchedSubscriptionScopes = [for id in watchedSubscriptions: '/subscriptions/${id}']

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: rgName
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'labguard-monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    workspaceName: 'log-labguard-${resourceToken}'
    appInsightsName: 'appi-labguard-${resourceToken}'
  }
}

module storage 'modules/storage.bicep' = {
  name: 'labguard-storage'
  scope: rg
  params: {
    location: location
    tags: tags
    storageAccountName: 'stlabguard${resourceToken}'
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
    ledgerTableName: ledgerTableName
    skuName: storageSku
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'labguard-keyvault'
  scope: rg
  params: {
    location: location
    tags: tags
    keyVaultName: keyVaultName
    smtpPassword: smtpPassword
    eventGridTopicKey: eventGridTopicKey
    webhookUrls: webhookUrls
  }
}

// Every setting labguard's code reads (shared/runtime/settings.py KNOWN_SETTINGS), except the platform's
// AzureWebJobsStorage__* (modules/functionapp.bicep), the local-only connection string and endpoint
// override, and AZURE_CLIENT_ID (only for a user-assigned identity; this template uses the
// system-assigned one). tests/infra checks this list.
var appSettings = {
  LABGUARD_MODE: labguardMode
  LABGUARD_POLICY_FILE: policyFile
  LABGUARD_ARM_ENDPOINT: empty(armEndpoint) ? environment().resourceManager : armEndpoint
  LABGUARD_ARM_AUDIENCE: armAudience
  LABGUARD_CA_BUNDLE: caBundle
  LABGUARD_SUBSCRIPTIONS: join(watchedSubscriptions, ',')
  LABGUARD_RESOURCE_GROUPS: join(watchedResourceGroupNames, ',')
  LABGUARD_SCHEDULE: schedule
  LABGUARD_CONCURRENCY: concurrency
  LABGUARD_SWEEP_FANOUT: sweepFanout
  LABGUARD_LIST_CONCURRENCY: listConcurrency
  LABGUARD_SMTP_HOST: smtpHost
  LABGUARD_SMTP_PORT: smtpPort
  LABGUARD_SMTP_USERNAME: smtpUsername
  LABGUARD_SMTP_PASSWORD: keyVault.outputs.smtpPasswordSetting
  LABGUARD_MAIL_FROM: mailFrom
  LABGUARD_FALLBACK_EMAIL: fallbackEmail
  LABGUARD_EVENTGRID_TOPIC_ENDPOINT: eventGridTopicEndpoint
  LABGUARD_EVENTGRID_TOPIC_KEY: keyVault.outputs.eventGridTopicKeySetting
  LABGUARD_WEBHOOK_URLS: keyVault.outputs.webhookUrlsSetting
  LABGUARD_SUPPORT_URL_HOSTS: supportUrlHosts
  LABGUARD_LEDGER_TABLE: storage.outputs.ledgerTableName
  LABGUARD_NOTICE_WAIT_SECONDS: noticeWaitSeconds
  LABGUARD_CHANGES_TABLE: 'labguardchanges'
  LABGUARD_REPORT_CONTAINER: reportContainer
  LABGUARD_REPORT_ACCOUNT_URL: empty(reportContainer) ? '' : storage.outputs.blobEndpoint
  LABGUARD_DIGEST_EMAIL: digestEmail
  LABGUARD_LABS: labs
  LABGUARD_NOTIFY_CHANGER: notifyChanger
  LABGUARD_EXEMPTION_CONTACT: exemptionContact
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'labguard-functionapp'
  scope: rg
  params: {
    location: location
    tags: tags
    functionAppName: functionAppName
    planName: 'plan-labguard-${resourceToken}'
    storageAccountName: storage.outputs.storageAccountName
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyVault.outputs.keyVaultName
    appSettings: appSettings
  }
}

// Only where the subscription has no system topic yet. An existing topic is never changed here (and
// `azd down`, which deletes labguard's resource group, never deletes it): the postdeploy hook only
// adds labguard's event subscription to it.
module eventGrid 'modules/eventgrid.bicep' = if (!useExistingSystemTopic) {
  name: 'labguard-eventgrid'
  scope: rg
  params: {
    tags: tags
    systemTopicName: systemTopicName
    storageAccountName: storage.outputs.storageAccountName
    deadLetterContainerName: storage.outputs.deadLetterContainerName
  }
}

// ---------------------------------------------------------------------------------------------
// Least privilege: one custom role, from infra/roles/lab-plan-operator.json (also usable with
// `az role definition create`). No built-in role fits: Lab Services Reader cannot patch, Lab Services
// Contributor can also create and delete labs, plans and VMs.
// ---------------------------------------------------------------------------------------------

var labPlanOperatorRole = loadJsonContent('roles/lab-plan-operator.json')

resource labPlanOperator 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, environmentName, 'labguard-lab-plan-operator')
  properties: {
    roleName: '${labPlanOperatorRole.roleName} (${environmentName}-${resourceToken})'
    description: labPlanOperatorRole.description
    type: 'CustomRole'
    permissions: [
      {
        actions: labPlanOperatorRole.actions
        notActions: labPlanOperatorRole.notActions
        dataActions: labPlanOperatorRole.dataActions
        notDataActions: labPlanOperatorRole.notDataActions
      }
    ]
    assignableScopes: union([subscription().id], resourceGroupMode ? scopeResourceGroupIds : watchedSubscriptionScopes)
  }
}

// Lab plans: on each watched subscription, or only on the listed resource groups.
module labPlanAccessOnSubscriptions 'modules/role-assignment-subscription.bicep' = [
  for sub in (resourceGroupMode ? [] : watchedSubscriptions): {
    name: 'labguard-labplans-${uniqueString(sub, environmentName)}'
    scope: subscription(sub)
    params: {
      roleDefinitionId: '/subscriptions/${sub}/providers/Microsoft.Authorization/roleDefinitions/${labPlanOperator.name}'
      principalId: functionApp.outputs.principalId
      assignmentDescription: 'labguard (${environmentName}): list, read and patch lab plans'
    }
  }
]

module labPlanAccessOnResourceGroups 'modules/role-assignment-resourcegroup.bicep' = [
  for rgId in scopeResourceGroupIds: {
    name: 'labguard-labplans-${uniqueString(rgId, environmentName)}'
    scope: resourceGroup(split(rgId, '/')[2], split(rgId, '/')[4])
    params: {
      roleDefinitionId: '/subscriptions/${split(rgId, '/')[2]}/providers/Microsoft.Authorization/roleDefinitions/${labPlanOperator.name}'
      principalId: functionApp.outputs.principalId
      assignmentDescription: 'labguard (${environmentName}): list, read and patch lab plans'
    }
  }
]

// ---------------------------------------------------------------------------------------------
// Outputs (azd writes them into the environment)
// ---------------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.functionAppName
output LABGUARD_PRINCIPAL_ID string = functionApp.outputs.principalId
output LABGUARD_STORAGE_ACCOUNT string = storage.outputs.storageAccountName
output LABGUARD_KEY_VAULT string = keyVault.outputs.keyVaultName
output LABGUARD_APP_INSIGHTS string = monitoring.outputs.appInsightsName
output LABGUARD_FUNCTION_APP_ID string = functionApp.outputs.functionAppId
// What the postdeploy hook subscribes eventgrid_lab_plan to, and where it dead-letters.
output LABGUARD_SYSTEM_TOPIC string = systemTopicName
output LABGUARD_SYSTEM_TOPIC_RESOURCE_GROUP string = useExistingSystemTopic ? existingSystemTopicResourceGroup : rg.name
output LABGUARD_SYSTEM_TOPIC_CREATED bool = !useExistingSystemTopic
output LABGUARD_DEAD_LETTER_CONTAINER_ID string = '${storage.outputs.storageAccountId}/blobServices/default/containers/${deadLetterContainerName}'
output LABGUARD_LAB_PLAN_ROLE_ID string = labPlanOperator.id
