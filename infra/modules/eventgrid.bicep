// Event Grid system topic on the subscription (Microsoft.Resources.Subscriptions) and the event
// subscription that sends lab plan writes to the `eventgrid_lab_plan` function.
//
// The filter admits exactly what the handler acts on (tests/infra checks it against
// shared/events.py): the two resource-write event types, and data.operationName equal to the lab
// plan write operation. Everything else in the subscription (every other resource write, delete,
// action) is dropped by Event Grid and never wakes the app.
//
// The event subscription is created only when deployEventSubscription is true: Event Grid checks
// that the function exists when the subscription is created, and the function exists only after
// the code is deployed (azd deploys code after infrastructure). See infra/README.md.

@description('Tags for every resource.')
param tags object

@description('System topic name.')
param systemTopicName string

@description('Resource id of the Function App.')
param functionAppId string

@description('Name of the Event Grid triggered function in function_app.py.')
param functionName string = 'eventgrid_lab_plan'

@description('Create the event subscription (true only once the function code is deployed).')
param deployEventSubscription bool = false

@description('Name of the storage account holding the dead-letter container.')
param storageAccountName string

@description('Blob container that receives events that could not be delivered.')
param deadLetterContainerName string

@description('Delivery attempts before an event is dead-lettered (1-30).')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 10

@description('Minutes Event Grid keeps retrying one event before it is dead-lettered (1-1440).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

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

// The topic writes dead letters with its own identity, to this one container only.
resource deadLetterAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, systemTopic.id, storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: systemTopic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource labPlanWrites 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = if (deployEventSubscription) {
  parent: systemTopic
  name: 'labguard-lab-plan-writes'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/${functionName}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.Resources.ResourceWriteSuccess'
        'Microsoft.Resources.ResourceWriteFailure'
      ]
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.operationName'
          values: [
            'Microsoft.LabServices/labPlans/write'
          ]
        }
      ]
      enableAdvancedFilteringOnArrays: false
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
  dependsOn: [
    deadLetterAccess
  ]
}

output systemTopicName string = systemTopic.name
output eventSubscriptionName string = deployEventSubscription ? labPlanWrites.name : ''
