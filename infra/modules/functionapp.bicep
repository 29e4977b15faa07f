// The labguard Function App: Linux, Python 3.11, on Flex Consumption (FC1) only. (Linux Consumption
// (Y1) was dropped: it needs WEBSITE_RUN_FROM_PACKAGE and an Azure Files content share, which
// needs a storage account key; see infra/README.md.) System-assigned managed identity; app
// settings as one `config/appsettings` resource so the drift test can read every name.

@description('Region of the plan and the app.')
param location string

@description('Tags for every resource.')
param tags object

@description('Function App name (globally unique host name).')
param functionAppName string

@description('Hosting plan name.')
param planName string

@description('Flex Consumption: most instances the app may scale to (labguard is light; ARM throttling, not compute, is its limit).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Flex Consumption: memory of each instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Name of the storage account (AzureWebJobsStorage; also holds the notice ledger table).')
param storageAccountName string

@description('Blob endpoint of that account, e.g. https://NAME.blob.core.windows.net/.')
param blobEndpoint string

@description('Queue endpoint of that account, e.g. https://NAME.queue.core.windows.net/.')
param queueEndpoint string

@description('Table endpoint of that account, e.g. https://NAME.table.core.windows.net/ (host and notice ledger).')
param tableEndpoint string

@description('Blob container of the Flex deployment package.')
param deploymentContainerName string

@description('Name of the Application Insights component.')
param appInsightsName string

@description('Name of the Key Vault the secret settings reference.')
param keyVaultName string

@description('labguard\'s own settings (LABGUARD_*): name -> value. Built in main.bicep.')
param appSettings object

// Role definition ids (built-in roles), each granted on one resource of this resource group only.
// The three storage data roles are the ones the official Flex Consumption azd samples give the app
// identity for an identity-based AzureWebJobsStorage: blob (host leases and keys, and the Flex
// deployment package), queue (host; and labguard's sweep fan-out queue), table (host; the
// notice ledger, which also creates its table on first use).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// Settings of the Functions platform (labguard's code reads AzureWebJobsStorage__tableServiceUri and
// __queueServiceUri; the host's queue trigger of the sweep fan-out uses the same identity connection).
var platformSettings = {
  // The host's storage, identity-based (no account key exists to put in a connection string). The
  // service URIs rather than __accountName: they carry the cloud's storage suffix. The notice ledger
  // (shared/notices/ledger.py) connects to __tableServiceUri with the same managed identity.
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__blobServiceUri: blobEndpoint
  AzureWebJobsStorage__queueServiceUri: queueEndpoint
  AzureWebJobsStorage__tableServiceUri: tableEndpoint
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  // Local auth is off on the component: telemetry is sent with the app's managed identity.
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
  // labguard uses no pydantic plugins: without this, the first policy validation on each new
  // instance scans every installed distribution's entry points for them (part of the first event's time).
  PYDANTIC_DISABLE_PLUGINS: '__all__'
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  // azd finds the app it deploys `api` to by this tag.
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    keyVaultReferenceIdentity: 'SystemAssigned'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
    }
  }
}

resource appSettingsConfig 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: union(platformSettings, appSettings)
  dependsOn: [
    hostBlobAccess
    hostQueueAccess
    hostTableAccess
    secretsAccess
    telemetryAccess
  ]
}

// No FTP and no basic-auth publishing: azd and Core Tools deploy with Entra ID tokens.
resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

// Identity-based AzureWebJobsStorage and the Flex deployment package (blob), the host's queues,
// and the host's and the notice ledger's tables: on labguard's own storage account only.
resource hostBlobAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionApp.id, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource hostQueueAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionApp.id, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource hostTableAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionApp.id, storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Key Vault references (SMTP password, topic key, webhook URLs) resolve with the app's identity.
resource secretsAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, functionApp.id, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Telemetry with Entra ID auth (the component has local auth switched off).
resource telemetryAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, functionApp.id, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output functionAppName string = functionApp.name
output functionAppId string = functionApp.id
output principalId string = functionApp.identity.principalId
output defaultHostName string = functionApp.properties.defaultHostName
