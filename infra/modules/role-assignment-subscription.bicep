// Assigns one role to the Function App's identity on one subscription.
targetScope = 'subscription'

@description('Resource id of the role definition.')
param roleDefinitionId string

@description('Object id of the Function App\'s managed identity.')
param principalId string

@description('Why the assignment exists (shown in the portal).')
param assignmentDescription string

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, roleDefinitionId)
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: assignmentDescription
  }
}

output roleAssignmentId string = assignment.id
