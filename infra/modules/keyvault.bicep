// Key Vault for labguard's secrets. Each secret exists only when its value was given; the Function
// App reads it through a Key Vault reference with its own identity (Key Vault Secrets User on this
// vault only, granted in functionapp.bicep). Secret values never appear in app settings, outputs
// or deployment history.

@description('Region of the vault.')
param location string

@description('Tags for every resource.')
param tags object

@description('Vault name (3-24 characters, globally unique).')
@minLength(3)
@maxLength(24)
param keyVaultName string

@secure()
@description('LABGUARD_SMTP_PASSWORD; empty: no secret, the setting stays empty.')
param smtpPassword string = ''

@secure()
@description('LABGUARD_EVENTGRID_TOPIC_KEY; empty: no secret, the setting stays empty.')
param eventGridTopicKey string = ''

@secure()
@description('LABGUARD_WEBHOOK_URLS (incoming-webhook URLs carry their token in the URL); empty: none.')
param webhookUrls string = ''

var smtpPasswordSecretName = 'labguard-smtp-password'
var topicKeySecretName = 'labguard-eventgrid-topic-key'
var webhookUrlsSecretName = 'labguard-webhook-urls'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    // A deleted vault stays recoverable for 90 days; its name stays taken for that time.
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource smtpPasswordSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(smtpPassword)) {
  parent: vault
  name: smtpPasswordSecretName
  properties: {
    value: smtpPassword
    contentType: 'text/plain'
  }
}

resource topicKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(eventGridTopicKey)) {
  parent: vault
  name: topicKeySecretName
  properties: {
    value: eventGridTopicKey
    contentType: 'text/plain'
  }
}

resource webhookUrlsSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(webhookUrls)) {
  parent: vault
  name: webhookUrlsSecretName
  properties: {
    value: webhookUrls
    contentType: 'text/plain'
  }
}

output keyVaultName string = vault.name
output keyVaultId string = vault.id
// App setting values: a Key Vault reference when the secret exists, otherwise empty (channel off).
output smtpPasswordSetting string = empty(smtpPassword) ? '' : '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${smtpPasswordSecretName})'
output eventGridTopicKeySetting string = empty(eventGridTopicKey) ? '' : '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${topicKeySecretName})'
output webhookUrlsSetting string = empty(webhookUrls) ? '' : '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${webhookUrlsSecretName})'
