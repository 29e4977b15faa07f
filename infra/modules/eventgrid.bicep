// The Event Grid system topic of the deployment subscription (Microsoft.Resources.Subscriptions),
// created only when the subscription has none: Azure allows one such topic per subscription, so
// where one exists already main.bicep skips this module and labguard subscribes to that topic.
//
// The event subscription itself is not here: Event Grid validates an AzureFunction endpoint when
// the subscription is created, and `eventgrid_lab_plan` exists only after the code is deployed. The
// postdeploy hook (infra/hooks/postdeploy.sh, .ps1) creates or updates it, with the filter that
// shared/runtime/events.py accepts, once the function is listed on the app.

@description('Tags for every resource.')
param tags object

@description('System topic name.')
param systemTopicName string

@description('Name of the storage account holding the dead-letter container.')
param storageAccountName string

@description('Blob container that receives events that could not be delivered.')
param deadLetterContainerName string

var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: 'global'
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: subscription().id
    topicType: 'Microsoft.Resources.Subscriptions'
  }
}

// The topic writes dead letters with its own identity (the account has no keys), to this one
// container only.
resource deadLetterAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, systemTopic.id, storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: systemTopic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output systemTopicName string = systemTopic.name
